"""Benchmark: forward + backward time of each DeformConv2d backend at the shapes NDMHA uses.

The shapes are those of NDMHA's DMHA layers (depthwise 3x3 deformable convs on C and 2C channels
at each scale of a SIZE x SIZE input), ratios against the pure-torch reference.

    python bench/deform_conv.py                 # 256 x 256, batch 4 (GPU if present)
    python bench/deform_conv.py --size 64 --batch 2 --repeat 3     # minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse

import torch
from _common import machine, print_table, time_fn

from ndmha.models.layers import DEFORM_BACKENDS, DeformConv2d, deform_backend_available
from ndmha.models.ndmha import WIDTHS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    order = ["torch", *(b for b in DEFORM_BACKENDS if b != "torch")]  # the reference first
    checks = {b: deform_backend_available(b) for b in order}
    backends = [b for b, (ok, _) in checks.items() if ok]
    skipped = [f"{b}: {why}" for b, (ok, why) in checks.items() if not ok]
    rows = []
    for level, width in enumerate(WIDTHS[1:], start=1):  # NDMHALs run at 1/2 ... 1/8 scale
        side = args.size >> level
        for channels in (width, 2 * width):  # the Q conv and the K/V conv of a DMHA
            x = torch.randn(args.batch, channels, side, side, device=device, requires_grad=True)
            row: dict[str, object] = {"shape": f"{args.batch}x{channels}x{side}x{side}"}
            for backend in backends:
                torch.manual_seed(0)
                layer = DeformConv2d(channels, channels, groups=channels, backend=backend)
                layer = layer.to(device)
                with torch.no_grad():
                    layer.offset.weight.normal_(0, 0.1)

                def step() -> None:
                    layer(x).square().mean().backward()

                row[f"{backend} ms"] = 1000 * time_fn(step, device, repeat=args.repeat)
            for backend in backends[1:]:
                row[f"torch / {backend}"] = row["torch ms"] / row[f"{backend} ms"]
            rows.append(row)
    total = {"shape": "all NDMHA shapes"}
    for key in rows[0]:
        if key.endswith(" ms"):
            total[key] = sum(r[key] for r in rows)
    for backend in backends[1:]:
        total[f"torch / {backend}"] = total["torch ms"] / total[f"{backend} ms"]
    rows.append(total)
    print_table(f"DeformConv2d forward + backward, {args.size}px input, batch {args.batch}, "
                f"{machine(device)} (ratio > 1: faster than the pure-torch reference)", rows)
    for line in skipped:
        print(f"\nnot measured: {line}")


if __name__ == "__main__":
    main()
