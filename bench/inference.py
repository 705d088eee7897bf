"""Benchmark: inference latency at batch 1 and throughput at larger batches, side by side.

Variants: eager fp32, bf16 autocast, channels_last, torch.compile, and on a GPU the forward
captured once as a CUDA graph and replayed (``torch.cuda.graphs``: no launch overhead).

    python bench/inference.py                                   # GPU: 256 px, batches 1 32 64
    python bench/inference.py --size 64 --batches 1 8 --repeat 3 --no-compile    # 2 CPU cores
"""

from __future__ import annotations

import argparse
import contextlib
from typing import Callable

import torch
from _common import bench_model, machine, peak_mib, print_table, random_batch, reset_peak, time_fn

from ndmha.models import ARCHITECTURES
from ndmha.models.layers import AUTO, resolve_backend

EAGER, BF16_NHWC, GRAPH = "eager fp32", "bf16 + channels_last", "CUDA graph"
#: the variants by name: bf16 autocast, channels_last, torch.compile, CUDA graph
VARIANTS = {EAGER: {}, "bf16": {"bf16": True}, "channels_last": {"cl": True},
            BF16_NHWC: {"bf16": True, "cl": True},
            "compile bf16 + channels_last": {"bf16": True, "cl": True, "compile": True},
            GRAPH: {"graph": True}}


def forward(model: torch.nn.Module, image: torch.Tensor, mask: torch.Tensor, opts: dict,
            device: torch.device) -> Callable[[], object]:
    """The variant's forward of one batch, as a callable (a CUDA graph: captured here)."""
    run = torch.compile(model) if opts.get("compile") else model
    cast = (torch.autocast(device.type, dtype=torch.bfloat16) if opts.get("bf16")
            else contextlib.nullcontext())
    if not opts.get("graph"):
        def infer() -> None:
            with torch.inference_mode(), cast:
                run(image, mask)
        return infer
    stream = torch.cuda.Stream()  # warm up on a side stream, then capture once
    stream.wait_stream(torch.cuda.current_stream())
    with torch.inference_mode(), torch.cuda.stream(stream):
        for _ in range(3):
            model(image, mask)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.inference_mode(), torch.cuda.graph(graph):
        model(image, mask)
    return graph.replay


def measure(name: str, variants: list[str], batches: list[int], size: int, device: torch.device,
            backend: str, repeat: int) -> list[dict[str, object]]:
    """One row per variant and batch: ms per batch and per image, images/s, peak memory."""
    rows = []
    for label in variants:
        opts = VARIANTS[label]
        fmt = torch.channels_last if opts.get("cl") else torch.contiguous_format
        model = bench_model(name, backend).to(device, memory_format=fmt).eval()
        for batch in batches:
            image, mask, _ = random_batch(batch, size, device, fmt)
            reset_peak(device)
            try:
                seconds = time_fn(forward(model, image, mask, opts, device), device, warmup=3,
                                  repeat=repeat)
            except Exception as err:  # a capture or compile that fails is a row's finding
                rows.append({"model": name, "variant": label, "batch": batch,
                             "ms/batch": f"failed: {type(err).__name__}: {err}"[:120]})
                continue
            rows.append({"model": name, "variant": label, "batch": batch,
                         "ms/batch": 1000 * seconds, "ms/image": 1000 * seconds / batch,
                         "images/s": batch / seconds, "peak MiB": peak_mib(device) or "n/a"})
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32, 64])
    parser.add_argument("--models", nargs="+", default=list(ARCHITECTURES))
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--backend", default=AUTO, help="the deformable convs' backend")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    variants = [v for v in VARIANTS if not (args.no_compile and "compile" in VARIANTS[v])
                and (device.type == "cuda" or v != GRAPH)]
    backend = resolve_backend(args.backend, device)
    rows = [row for name in args.models
            for row in measure(name, variants, args.batches, args.size, device, backend,
                               args.repeat)]
    print_table(f"Inference, {args.size}x{args.size}, {machine(device)}", rows)


if __name__ == "__main__":
    main()
