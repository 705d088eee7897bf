"""Benchmark: NDMHA's CPU training step and inference against the U-Net's, per deformable-conv
backend, as ratios measured side by side (the CPU-step issue's targets).

Every round times each row once, in the same order, and divides it by the U-Net row of that
round (L1 step for the training rows, inference at the same batch for the inference rows): a
machine that drifts during the run moves both sides of a ratio. The table gives each ratio's
median over the rounds and its range.

Targets: NDMHA's L1-only step <= 3x the U-Net's L1 step, its full-objective step <= 4x the
U-Net's L1 step, inference per image <= 3x the U-Net's (same batch, same CPU).

    python bench/cpu_step.py                              # 64 px, batch 8, 7 rounds
    python bench/cpu_step.py --backends fused --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
from _common import FULL, bench_model, bench_trainer, machine, print_table, random_batch

L1 = {"l1": 1.0}
TARGETS = {"L1 step": 3.0, "full step": 4.0, "inference": 3.0}


def training_step(manifest: Path, architecture: str, loss: dict[str, float], backend: str,
                  size: int, batch: int) -> Callable[[], object]:
    trainer = bench_trainer(manifest, torch.device("cpu"), architecture=architecture,
                            batch_size=batch, loss=loss, deform_backend=backend)
    image, mask, target = random_batch(batch, size, torch.device("cpu"), seed=0)
    return lambda: trainer.train_batch(image, mask, target)


def inference(architecture: str, backend: str, size: int, batch: int) -> Callable[[], object]:
    model = bench_model(architecture, backend).eval()
    image, mask, _ = random_batch(batch, size, torch.device("cpu"), seed=0)

    def run() -> None:
        with torch.inference_mode():
            model(image, mask)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--backends", nargs="+", default=["torch", "fused"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "manifest.csv"
        manifest.write_text("bench\n")
        # (row, what it is divided by, target, the callable)
        rows: list[tuple[str, str, str | None, Callable[[], object]]] = [
            ("U-Net L1 step", "", None,
             training_step(manifest, "baseline", L1, "torch", args.size, args.batch)),
            ("U-Net inference", "", None, inference("baseline", "torch", args.size, args.batch)),
        ]
        for backend in args.backends:
            rows += [
                (f"NDMHA L1 step ({backend})", "U-Net L1 step", "L1 step",
                 training_step(manifest, "ndmha", L1, backend, args.size, args.batch)),
                (f"NDMHA full step ({backend})", "U-Net L1 step", "full step",
                 training_step(manifest, "ndmha", FULL, backend, args.size, args.batch)),
                (f"NDMHA inference ({backend})", "U-Net inference", "inference",
                 inference("ndmha", backend, args.size, args.batch)),
            ]
        for _ in range(args.warmup):
            for *_, fn in rows:
                fn()
        seconds: dict[str, list[float]] = {name: [] for name, *_ in rows}
        for _ in range(args.rounds):
            for name, *_, fn in rows:
                began = time.perf_counter()
                fn()
                seconds[name].append(time.perf_counter() - began)
    table = []
    for name, over, target, _ in rows:
        row: dict[str, object] = {"row": name,
                                  "ms (median)": 1000 * statistics.median(seconds[name])}
        if over:
            ratios = [a / b for a, b in zip(seconds[name], seconds[over])]
            row.update({"x the U-Net (median)": statistics.median(ratios),
                        "range": f"{min(ratios):.2f}-{max(ratios):.2f}",
                        "target": f"<= {TARGETS[target]:g}x",
                        "met": "yes" if statistics.median(ratios) <= TARGETS[target] else "no"})
        table.append(row)
    print_table(f"NDMHA against the U-Net on the CPU, {args.size} px, batch {args.batch}, "
                f"{args.rounds} rounds side by side, {machine(torch.device('cpu'))}", table)


if __name__ == "__main__":
    main()
