"""What ``train.deterministic`` costs and what it buys: two runs of one seed, per architecture.

For each mode (``train.deterministic`` off, then on) a fresh process (the switch sets
``CUBLAS_WORKSPACE_CONFIG``, which only counts before CUDA starts, and flags that are global)
trains each architecture twice from the same seed on the same batches with its objective
(bench/_common.LOSSES) and records:

- ``ms/step``: the median step time after the first (cuDNN's autotuning, when on, and warm-up);
- ``repeat``: whether the two runs' generator weights are bitwise equal after ``--steps`` steps,
  and the largest absolute weight difference when not;
- ``warned``: the ops torch warned about as having no deterministic implementation (``warn_only``:
  they run anyway, non-deterministic). An op that is non-deterministic without torch knowing
  (torchvision's deformable backward accumulates with atomic adds) shows only in ``repeat``.

docs/architecture.md ("Determinism on a GPU") says what each architecture's "repeatable" means.

    python bench/determinism.py --device cuda --size 256 --batch 8 --steps 6   # the GPU figure
    python bench/determinism.py --device cpu --size 32 --batch 2 --steps 3     # a CPU check

``--json`` prints the rows as one JSON line (bench/gpu_suite.py's part f reads it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from _common import LOSSES, bench_trainer, machine, print_table, random_batch, sync

MODELS = ("baseline", "ndmha", "ndmha_released")


def two_runs(model: str, on: bool, device: torch.device, size: int, batch: int, steps: int,
             manifest: Path) -> dict[str, Any]:
    """One architecture trained twice from seed 0 on the same batches, in this process's mode."""
    finals, times, warned = [], [], set()
    for _ in range(2):
        trainer = bench_trainer(manifest, device, architecture=model, batch_size=batch,
                                loss=LOSSES[model], deterministic=on, seed=0)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for step in range(steps):
                image, mask, target = random_batch(batch, size, device, trainer.memory_format,
                                                   seed=step)
                began = time.perf_counter()
                trainer.train_batch(image, mask, target)
                sync(device)
                if step:
                    times.append(time.perf_counter() - began)
        warned |= {str(w.message).split(" does not have")[0][:80] for w in caught
                   if "deterministic" in str(w.message)}
        finals.append(torch.cat([p.detach().float().flatten().cpu()
                                 for p in trainer.model.parameters()]))
    difference = float((finals[0] - finals[1]).abs().max())
    return {"model": model, "deterministic": on, "ms/step": 1000 * statistics.median(times),
            "repeat": "bitwise" if torch.equal(finals[0], finals[1]) else "differs",
            "max abs Δw": difference, "warned": "; ".join(sorted(warned)) or "none"}


def this_mode(on: bool, device: torch.device, size: int, batch: int, steps: int
              ) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "manifest.csv"
        manifest.write_text("bench\n")
        return [two_runs(m, on, device, size, batch, steps, manifest) for m in MODELS]


def both_modes(device: str, size: int, batch: int, steps: int, timeout: float | None = None
               ) -> list[dict[str, Any]]:
    """Off, then on, each in a fresh process; the on rows carry their cost against off."""
    rows = []
    for on in (False, True):
        done = subprocess.run([sys.executable, __file__, "--device", device, "--size",
                               str(size), "--batch", str(batch), "--steps", str(steps),
                               "--mode", "on" if on else "off", "--json"],
                              capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"determinism ({'on' if on else 'off'}) failed: "
                               f"{done.stderr.strip()[-1500:]}")
        rows += json.loads(done.stdout.strip().splitlines()[-1])
    off = {r["model"]: r["ms/step"] for r in rows if not r["deterministic"]}
    for row in rows:
        if row["deterministic"]:
            row["cost over off"] = row["ms/step"] / off[row["model"]]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=6, help="steps per run (at least 2)")
    parser.add_argument("--mode", choices=["on", "off", "both"], default="both",
                        help="one mode in this process (what 'both' runs in two)")
    parser.add_argument("--json", action="store_true", help="the rows as one JSON line")
    args = parser.parse_args()
    if args.steps < 2:
        parser.error("--steps must be at least 2 (the first step is not timed)")
    if args.mode == "both":
        rows = both_modes(args.device, args.size, args.batch, args.steps)
    else:
        rows = this_mode(args.mode == "on", torch.device(args.device), args.size, args.batch,
                         args.steps)
    if args.json:
        print(json.dumps(rows))
    else:
        print_table(f"train.deterministic on {machine(torch.device(args.device))}, "
                    f"{args.size} px, batch {args.batch}, {args.steps} steps per run", rows)


if __name__ == "__main__":
    main()
