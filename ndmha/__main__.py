"""Command line: ``python -m ndmha <command>``."""

from __future__ import annotations

import argparse
import sys

from ndmha.models import MODELS, build_model, count_gmac, count_parameters


def stats(args: argparse.Namespace) -> None:
    """Parameters and GMAC of a model at a square input size."""
    model = build_model(args.model)
    print(f"model={args.model} size={args.size}")
    print(f"params={count_parameters(model)} gmac={count_gmac(model, args.size):.4f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ndmha", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("stats", help="parameters and GMAC of a model")
    p.add_argument("--model", choices=sorted(MODELS), required=True)
    p.add_argument("--size", type=int, default=256, help="square input size (default 256)")
    p.set_defaults(func=stats)
    args = parser.parse_args(argv)
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
