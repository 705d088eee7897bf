"""Benchmark: inference latency at batch 1 and throughput at larger batches, side by side.

Variants: eager fp32, bf16 autocast, channels_last, torch.compile, and on a GPU
torch.compile(mode="reduce-overhead"), which replays CUDA graphs.

    python bench/inference.py                                   # GPU: 256 px, batches 1 32 64
    python bench/inference.py --size 64 --batches 1 8 --repeat 3 --no-compile    # 2 CPU cores
"""

from __future__ import annotations

import argparse
import contextlib

import torch
from _common import bench_model, machine, peak_mib, print_table, reset_peak, time_fn

from ndmha.models import ARCHITECTURES
from ndmha.models.layers import AUTO, resolve_backend


def variants(device: torch.device, compile_: bool) -> list[tuple[str, dict]]:
    found = [("eager fp32", {}), ("bf16", {"bf16": True}), ("channels_last", {"cl": True}),
             ("bf16 + channels_last", {"bf16": True, "cl": True})]
    if compile_:
        found.append(("compile bf16 + channels_last", {"bf16": True, "cl": True,
                                                       "compile": "default"}))
        if device.type == "cuda":
            found.append(("compile reduce-overhead (CUDA graphs) bf16 + channels_last",
                          {"bf16": True, "cl": True, "compile": "reduce-overhead"}))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32, 64])
    parser.add_argument("--models", nargs="+", default=list(ARCHITECTURES))
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--deform-backend", default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    backend = resolve_backend(args.deform_backend or AUTO, device)
    rows = []
    for name in args.models:
        for label, opts in variants(device, not args.no_compile):
            fmt = torch.channels_last if opts.get("cl") else torch.contiguous_format
            model = bench_model(name, backend).to(device, memory_format=fmt).eval()
            run = torch.compile(model, mode=opts["compile"]) if "compile" in opts else model
            for batch in args.batches:
                image = torch.rand(batch, 3, args.size, args.size, device=device)
                mask = (torch.rand(batch, 1, args.size, args.size, device=device) > 0.7).float()
                image, mask = (t.contiguous(memory_format=fmt) for t in (image, mask))
                cast = (torch.autocast(device.type, dtype=torch.bfloat16) if opts.get("bf16")
                        else contextlib.nullcontext())

                def infer() -> None:
                    with torch.inference_mode(), cast:
                        run(image, mask)

                reset_peak(device)
                seconds = time_fn(infer, device, warmup=3, repeat=args.repeat)
                rows.append({"model": name, "variant": label, "batch": batch,
                             "ms/batch": 1000 * seconds, "ms/image": 1000 * seconds / batch,
                             "images/s": batch / seconds, "peak MiB": peak_mib(device) or "n/a"})
                print(rows[-1], flush=True)
    print_table(f"Inference, {args.size}x{args.size}, {machine(device)}", rows)


if __name__ == "__main__":
    main()
