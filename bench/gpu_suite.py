"""The one-run GPU measurement: what docs/performance.md lacks, in about 7 minutes on one GPU.

Parts, in this order, each with its share of the time budget (a part that runs past its share
skips its remaining rows and says so); the JSON is rewritten after every part, so a run cut short
keeps what it measured:

  (a) deformable conv, forward + backward, per backend at every shape of both NDMHAs
      (bench/deform_conv.py, full resolution included);
  (b) the training step of the three networks with their full objectives: fp32 and bf16, NCHW
      and NHWC, batch 8, 32 and 1, peak memory, FLOPs per step (bench/train_step.py) and their
      fraction of the device's peak; torch.compile for each model's best eager row;
  (c) inference: batch-1 latency eager and as a CUDA graph, batched bf16 NHWC throughput
      (bench/inference.py);
  (d) one NDMHA training step profiled (bench/train_step.py's profile part): its time by the
      paper's components and by kernel, and data loading against the step;
  (e) what train.deterministic costs and buys (bench/train_step.py's determinism part).

    python bench/gpu_suite.py --out gpu_results            # on the GPU machine (docs/performance.md)
    python bench/gpu_suite.py --out /tmp/smoke --smoke     # the same code, CPU, tiny, < 2 minutes

Writes ``gpu_suite.json`` and ``gpu_suite.md`` into ``--out``, prints every row as it goes. Peaks
(dense, per precision): bf16 ~790 TFLOP/s as measured on an H200's matrix units (989 is the data
sheet's), fp32 rows against the TF32 tensor-core peak (494 TFLOP/s: cuDNN convolutions run in
TF32 by default) and the 67 TFLOP/s of plain fp32; on a CPU the fraction reads n/a. Learning
curves on a GPU come from study/gpu_study.py (the study's own runs), not from here.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch
from _common import machine, markdown_table

import deform_conv
import inference
import train_step
from ndmha.models.layers import AUTO, resolve_backend

MODELS = ("baseline", "ndmha", "ndmha_released")
#: dense peak TFLOP/s by precision on an H200 (see the module's docstring)
PEAKS = {"bf16": 790.0, "fp32 (TF32 peak)": 494.0, "fp32 (plain fp32 peak)": 67.0}
#: the parts and their shares of the time budget
SHARES = {"a_deform_conv": 0.05, "b_train_step": 0.55, "c_inference": 0.12,
          "d_profile": 0.1, "e_determinism": 0.18}


class Suite:
    """The running record: parts, their rows and times; written after every part."""

    def __init__(self, out: Path, budget_s: float, smoke: bool, device: torch.device) -> None:
        self.out, self.budget_s, self.smoke, self.device = out, budget_s, smoke, device
        self.began = time.perf_counter()
        self.record: dict[str, Any] = {
            "device": machine(device), "torch": torch.__version__,
            "cuda": torch.version.cuda, "python": platform.python_version(),
            "smoke": smoke, "budget_s": budget_s, "parts": {}}
        out.mkdir(parents=True, exist_ok=True)

    def elapsed(self) -> float:
        return time.perf_counter() - self.began

    def run(self, name: str, part: Callable[["Suite", float], list[dict[str, Any]]]) -> None:
        share = SHARES[name] * self.budget_s
        began = time.perf_counter()
        print(f"\n== part {name} (share {share:.0f} s, {self.elapsed():.0f} s so far)", flush=True)
        try:
            rows, error = part(self, began + share), None
        except Exception as err:  # one part failing must not lose the others
            rows, error = [], f"{type(err).__name__}: {err}"
            traceback.print_exc()
        seconds = time.perf_counter() - began
        self.record["parts"][name] = {"seconds": round(seconds, 2),
                                      "share_of_run": round(seconds / max(self.elapsed(), 1e-9), 3),
                                      "rows": rows, "error": error}
        self.write()

    def write(self) -> None:
        self.record["elapsed_s"] = round(self.elapsed(), 2)
        (self.out / "gpu_suite.json").write_text(json.dumps(self.record, indent=1, default=str))
        (self.out / "gpu_suite.md").write_text(markdown(self.record))


def markdown(record: dict[str, Any]) -> str:
    lines = [f"# GPU suite: {record['device']}", "",
             f"torch {record['torch']}, CUDA {record['cuda']}, Python {record['python']}; "
             f"{record['elapsed_s']:.0f} s of a {record['budget_s']:.0f} s budget"
             + (" (smoke run: tiny sizes, not measurements)" if record["smoke"] else ""), ""]
    for name, part in record["parts"].items():
        lines += [f"## {name} ({part['seconds']:.0f} s)", ""]
        if part["error"]:
            lines += [f"failed: {part['error']}", ""]
        if part["rows"]:
            lines += [markdown_table(part["rows"]), ""]
    return "\n".join(lines)


def part_a(suite: Suite, deadline: float) -> list[dict[str, Any]]:
    size = 32 if suite.smoke else 256
    shapes = deform_conv.layer_shapes(("ndmha", "ndmha_released"), size)
    backends = [b for b in ("torch", "torchvision") if b in deform_conv.available_backends()[0]]
    rows = deform_conv.measure(shapes, backends, 1 if suite.smoke else 4, suite.device,
                               1 if suite.smoke else 5)
    for row in rows:
        print(row, flush=True)
    return rows


def part_b(suite: Suite, deadline: float) -> list[dict[str, Any]]:
    # the rows most worth having first, in case a model's share runs out
    size, batches = (32, (1,)) if suite.smoke else (256, (8, 32, 1))
    repeat = 1 if suite.smoke else 3
    rows: list[dict[str, Any]] = []

    def measure(model: str, batch: int, amp: str, cl: str, compile_: bool) -> dict:
        row = train_step.variant_row(model, batch, amp, cl, compile_, size, suite.device, None,
                                     repeat)
        for key in ["bf16"] if amp == "bf16" else ["fp32 (TF32 peak)", "fp32 (plain fp32 peak)"]:
            if "TFLOP/s" in row:
                row[f"% of {key}"] = (100 * row["TFLOP/s"] / PEAKS[key]
                                      if suite.device.type == "cuda" else "n/a")
        print(row, flush=True)
        return row

    began = time.perf_counter()
    for index, model in enumerate(MODELS):  # each model gets an equal part of the share
        model_deadline = began + (deadline - began) * (index + 1) / len(MODELS)
        eager = []
        for amp in ("bf16", "off"):
            for cl in ("on", "off"):
                for batch in batches:
                    if eager and time.perf_counter() > model_deadline:  # one row always
                        rows.append({"model": model, "batch": batch,
                                     "precision": "bf16" if amp == "bf16" else "fp32",
                                     "channels_last": cl == "on", "skipped": "time share spent"})
                        continue
                    rows.append(measure(model, batch, amp, cl, False))
                    if "ms/step" in rows[-1]:
                        eager.append(rows[-1])
        # compile the best eager row, if a compile (minutes) still fits the share
        if eager and not suite.smoke and model_deadline - time.perf_counter() > 60:
            best = max(eager, key=lambda r: r["images/s"])
            rows.append(measure(model, best["batch"],
                                "bf16" if best["precision"] == "bf16" else "off",
                                "on" if best["channels_last"] else "off", True))
            rows[-1]["speed-up over eager"] = rows[-1]["images/s"] / best["images/s"]
    return rows


def part_c(suite: Suite, deadline: float) -> list[dict[str, Any]]:
    size, big = (32, 2) if suite.smoke else (256, 32)
    repeat = 2 if suite.smoke else 20
    latency = [inference.EAGER] + ([inference.GRAPH] if suite.device.type == "cuda" else [])
    batched = inference.BF16_NHWC if suite.device.type == "cuda" else inference.EAGER
    backend = resolve_backend(AUTO, suite.device)
    return [row for name in MODELS
            for variants, batch in ((latency, 1), ([batched], big))
            for row in inference.measure(name, variants, [batch], size, suite.device, backend,
                                         repeat)]


def part_d(suite: Suite, deadline: float) -> list[dict[str, Any]]:
    size, batch = (32, 2) if suite.smoke else (256, 8)
    amp = "off" if suite.device.type == "cpu" else "bf16"
    by_part, by_op, step_ms = train_step.profile_steps(suite.device, None, "full", size, batch,
                                                       1, amp=amp)
    rows = [{"what": r["part"], "ms": r["forward ms"] + r["backward ms"],
             "share of the step": r["share"]} for r in by_part]
    rows += [{"what": f"top op: {r['op']}", "ms": r["self ms / step"],
              "share of the step": r["self ms / step"] / step_ms} for r in by_op[:10]]
    rows.append(data_loading(suite, size, batch, step_ms))
    for row in rows:
        print(row, flush=True)
    return rows


def data_loading(suite: Suite, size: int, batch: int, step_ms: float) -> dict[str, Any]:
    """Milliseconds to read one batch from a written manifest (one process, no workers)."""
    from torch.utils.data import DataLoader

    from ndmha.data.dataset import InpaintingDataset

    with tempfile.TemporaryDirectory() as tmp:
        manifest = procedural_manifest(Path(tmp), 2 * batch, size, val=0, test=1)
        loader = DataLoader(InpaintingDataset(manifest, "train"), batch_size=batch)
        began = time.perf_counter()
        next(iter(loader))
        ms = 1000 * (time.perf_counter() - began)
    return {"what": f"data loading (one batch of {batch}, no workers)", "ms": ms,
            "share of the step": ms / step_ms}


def procedural_manifest(root: Path, n: int, size: int, val: int, test: int) -> Path:
    """The workflow's own data steps on ``n`` procedural faces and masks at ``size`` px."""
    from ndmha.data.demo import make_demo_dataset
    from ndmha.data.prepare import convert_images, overlay_masks, prepare_masks
    from ndmha.data.split import make_split

    threads = max(1, torch.get_num_threads())
    make_demo_dataset(root / "src" / "images", root / "src" / "masks", n_images=n, n_masks=n,
                      size=max(size, 16), mask_size=max(size, 16), seed=0, threads=threads)
    convert_images(root / "src" / "images", root / "images", n, size, threads=threads)
    prepare_masks(root / "src" / "masks", root / "masks", n, size, threads=threads)
    overlay_masks(root / "images", root / "masks", root / "corrupted", root / "pairs.csv",
                  threads)
    make_split(root / "pairs.csv", root / "manifest.csv", scheme="paper", seed=0, test=test,
               val=val)
    return root / "manifest.csv"


def part_e(suite: Suite, deadline: float) -> list[dict[str, Any]]:
    """train.deterministic's cost and what it buys (train_step's determinism, a process a mode)."""
    size, batch, steps = (32, 2, 2) if suite.smoke else (256, 8, 6)
    # the budget guards the GPU's lease; the smoke run checks the code, so a slow shared CPU
    # (18 s alone, over 60 s beside a training job) waits for it instead of failing the part
    timeout = None if suite.smoke else max(60.0, deadline - time.perf_counter())
    rows = train_step.both_modes(str(suite.device), size, batch, steps, timeout=timeout)
    for row in rows:
        print(row, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for gpu_suite.{json,md}")
    parser.add_argument("--smoke", action="store_true",
                        help="the same code on the CPU at tiny sizes (a test runs it)")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="the whole run's time budget (default 420 s; smoke 100 s)")
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    device = torch.device(args.device or ("cpu" if args.smoke or not torch.cuda.is_available()
                                          else "cuda"))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    budget = args.budget_s or (100.0 if args.smoke else 420.0)
    suite = Suite(Path(args.out), budget, args.smoke, device)
    print(f"GPU suite on {suite.record['device']}, torch {torch.__version__}, budget {budget:.0f} s",
          flush=True)
    for name, part in (("a_deform_conv", part_a), ("b_train_step", part_b),
                       ("c_inference", part_c), ("d_profile", part_d),
                       ("e_determinism", part_e)):
        suite.run(name, part)
    print(f"\ndone in {suite.elapsed():.0f} s: {suite.out / 'gpu_suite.md'}", flush=True)
    sys.exit(1 if any(p["error"] for p in suite.record["parts"].values()) else 0)


if __name__ == "__main__":
    main()
