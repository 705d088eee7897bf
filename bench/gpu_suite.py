"""The one-run GPU measurement: what docs/performance.md lacks, in about 7 minutes on one GPU.

Parts, in this order, each with its share of the time budget (a part that runs past its share
skips its remaining rows and says so); the JSON is rewritten after every part, so a run cut short
keeps what it measured:

  (a) deformable conv, forward + backward, per backend (torch, torchvision) at every shape our
      NDMHA and the released network run (bench/deform_conv.py: full resolution included);
  (b) the training step of the U-Net, our NDMHA and the released network with the full objective
      (NDMHA's four terms; the U-Net's L1): fp32 and bf16, NCHW and NHWC, batch 1, 8 and 32,
      peak memory, FLOPs per step and their fraction of the device's peak for that precision;
      torch.compile for each model's best eager row (only while the budget allows);
  (c) inference: batch-1 latency eager and replayed as a CUDA graph, and batched throughput;
  (d) a torch.profiler summary of one NDMHA training step: the top kernels, the shares of the
      deformable convs, the attention, the discriminator and the perceptual term (forward ranges),
      and data loading against the step;
  (e) an equal-budget learning run of the three networks at SIZE px on procedural faces (the same
      optimizer steps for each, sized so that the slowest takes its share), validation PSNR beside
      the training-free floor on the same images;
  (f) what train.deterministic costs and buys: each network trained twice from one seed with it
      off and on, step time, bitwise repeat or the largest weight difference, the ops torch
      warns about (bench/determinism.py, each mode in its own process).

    python bench/gpu_suite.py --out gpu_results            # on the GPU machine (docs/performance.md)
    python bench/gpu_suite.py --out /tmp/smoke --smoke     # the same code, CPU, tiny, < 2 minutes

Writes ``gpu_suite.json`` and ``gpu_suite.md`` into ``--out`` (and the learning run's scratch
data under ``--out/work``, deleted at the end), prints every row as it goes.

FLOPs: torch.utils.flop_counter over one training step (forward and backward, generator and
discriminator, perceptual network), which counts matrix products and convolutions; a deformable
conv is added analytically as a convolution of the same shape (2 x output elements x inputs per
group x taps, forward; twice that backward), its bilinear sampling not counted, as count_gmac
does. Peaks (dense, per precision): bf16 ~790 TFLOP/s as measured on this H200's matrix units
(the issue's figure; 989 is the data-sheet value), fp32 rows against the TF32 tensor-core peak
(494 TFLOP/s data sheet: cuDNN convolutions run in TF32 by default) and the 67 TFLOP/s of plain
fp32. On a CPU no peak is known and the fraction reads n/a.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch
from _common import (LOSSES, bench_trainer, machine, peak_mib, random_batch, reset_peak,
                     sync, time_fn)

import deform_conv
import determinism
from ndmha.models import build_model
from ndmha.models.layers import DeformConv2d
from ndmha.train import Trainer, TrainSettings

MODELS = ("baseline", "ndmha", "ndmha_released")
#: dense peak TFLOP/s by precision on an H200 (see the module's docstring)
PEAKS = {"bf16": 790.0, "fp32 (TF32 peak)": 494.0, "fp32 (plain fp32 peak)": 67.0}
#: the parts and their shares of the time budget
SHARES = {"a_deform_conv": 0.05, "b_train_step": 0.35, "c_inference": 0.08,
          "d_profile": 0.07, "e_learning": 0.33, "f_determinism": 0.12}


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
        rows = part["rows"]
        if rows:
            columns = list(dict.fromkeys(k for row in rows for k in row))
            lines.append("| " + " | ".join(columns) + " |")
            lines.append("|" + "---|" * len(columns))
            for row in rows:
                lines.append("| " + " | ".join(
                    f"{row[c]:.4g}" if isinstance(row.get(c), float) else str(row.get(c, ""))
                    for c in columns) + " |")
            lines.append("")
    return "\n".join(lines)


def _trainer(model: str, batch: int, amp: str, channels_last: str, compile_: bool,
             device: torch.device, manifest: Path) -> Trainer:
    return bench_trainer(manifest, device, architecture=model, batch_size=batch,
                         loss=LOSSES[model], amp=amp, channels_last=channels_last,
                         compile=compile_)


def step_flops(trainer: Trainer, image: torch.Tensor, mask: torch.Tensor,
               target: torch.Tensor) -> float:
    """FLOPs of one training step (see the module's docstring for the deformable convs)."""
    from torch.utils.flop_counter import FlopCounterMode

    deform = []

    def as_conv(module: DeformConv2d, inputs: tuple, output: torch.Tensor) -> None:
        deform.append(2 * output.numel() * module.weight.shape[1] * module.taps * 3)

    hooks = [m.register_forward_hook(as_conv) for m in trainer.model.modules()
             if isinstance(m, DeformConv2d)]
    try:
        with FlopCounterMode(display=False) as counter:
            trainer.train_batch(image, mask, target)
    finally:
        for hook in hooks:
            hook.remove()
    return float(counter.get_total_flops() + sum(deform))


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
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "manifest.csv"
        manifest.write_text("bench\n")

        def measure(model: str, batch: int, amp: str, cl: str, compile_: bool) -> dict:
            trainer = _trainer(model, batch, amp, cl, compile_, suite.device, manifest)
            image, mask, target = random_batch(batch, size, suite.device, trainer.memory_format)
            reset_peak(suite.device)
            seconds = time_fn(lambda: trainer.train_batch(image, mask, target), suite.device,
                              warmup=3 if compile_ else 2, repeat=repeat)
            flops = step_flops(trainer, image, mask, target) if not compile_ else None
            precision = "bf16" if amp == "bf16" else "fp32"
            row = {"model": model, "batch": batch, "precision": precision,
                   "channels_last": cl == "on", "compile": compile_, "ms/step": 1000 * seconds,
                   "images/s": batch / seconds, "peak MiB": peak_mib(suite.device) or "n/a (CPU)"}
            if flops is not None:
                row["TFLOP/step"] = flops / 1e12
                achieved = flops / seconds / 1e12
                row["TFLOP/s"] = achieved
                keys = ["bf16"] if precision == "bf16" else ["fp32 (TF32 peak)",
                                                             "fp32 (plain fp32 peak)"]
                for key in keys:
                    row[f"% of {key}"] = (100 * achieved / PEAKS[key]
                                          if suite.device.type == "cuda" else "n/a")
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
                                         "channels_last": cl == "on",
                                         "skipped": "time share spent"})
                            continue
                        try:
                            eager.append(measure(model, batch, amp, cl, False))
                            rows.append(eager[-1])
                        except torch.OutOfMemoryError:
                            torch.cuda.empty_cache()
                            rows.append({"model": model, "batch": batch,
                                         "precision": "bf16" if amp == "bf16" else "fp32",
                                         "channels_last": cl == "on", "images/s": "OOM"})
                        print(rows[-1], flush=True)
            # compile the best eager row, if a compile (minutes) still fits the share
            if eager and not suite.smoke and model_deadline - time.perf_counter() > 60:
                best = max(eager, key=lambda r: r["images/s"])
                rows.append(measure(model, best["batch"],
                                    "bf16" if best["precision"] == "bf16" else "off",
                                    "on" if best["channels_last"] else "off", True))
                rows[-1]["speed-up over eager"] = rows[-1]["images/s"] / best["images/s"]
                print(rows[-1], flush=True)
    return rows


def part_c(suite: Suite, deadline: float) -> list[dict[str, Any]]:
    size, big = (32, 2) if suite.smoke else (256, 32)
    repeat = 2 if suite.smoke else 20
    rows = []
    for name in MODELS:
        model = build_model(name).to(suite.device).eval()
        image, mask, _ = random_batch(1, size, suite.device, torch.contiguous_format)
        with torch.inference_mode():
            eager = time_fn(lambda: model(image, mask), suite.device, warmup=3, repeat=repeat)
        row = {"model": name, "batch-1 eager ms": 1000 * eager}
        if suite.device.type == "cuda":
            try:  # the forward captured once as a CUDA graph, then replayed
                static = [image.clone(), mask.clone()]
                stream = torch.cuda.Stream()
                stream.wait_stream(torch.cuda.current_stream())
                with torch.inference_mode(), torch.cuda.stream(stream):
                    for _ in range(3):
                        model(*static)
                torch.cuda.current_stream().wait_stream(stream)
                graph = torch.cuda.CUDAGraph()
                with torch.inference_mode(), torch.cuda.graph(graph):
                    model(*static)
                replay = time_fn(graph.replay, suite.device, warmup=3, repeat=repeat)
                row["batch-1 CUDA graph ms"] = 1000 * replay
            except Exception as err:
                row["batch-1 CUDA graph ms"] = f"failed: {type(err).__name__}: {err}"[:120]
        else:
            row["batch-1 CUDA graph ms"] = "n/a (CPU)"
        image, mask, _ = random_batch(big, size, suite.device, torch.channels_last)
        model = model.to(memory_format=torch.channels_last)
        cast = (torch.autocast(suite.device.type, dtype=torch.bfloat16)
                if suite.device.type == "cuda" else contextlib.nullcontext())
        with torch.inference_mode(), cast:
            batched = time_fn(lambda: model(image, mask), suite.device, warmup=2, repeat=repeat)
        row[f"batch-{big} images/s ({'bf16, NHWC' if suite.device.type == 'cuda' else 'fp32'})"] \
            = big / batched
        rows.append(row)
        print(row, flush=True)
    return rows


def part_d(suite: Suite, deadline: float) -> list[dict[str, Any]]:
    from torch.profiler import ProfilerActivity, profile, record_function

    size, batch = (32, 2) if suite.smoke else (256, 8)
    amp = "off" if suite.device.type == "cpu" else "bf16"
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "manifest.csv"
        manifest.write_text("bench\n")
        trainer = _trainer("ndmha", batch, amp, "auto", False, suite.device, manifest)
    image, mask, target = random_batch(batch, size, suite.device, trainer.memory_format)
    parts = {"deformable conv (forward)": [m for m in trainer.model.modules()
                                           if isinstance(m, DeformConv2d)],
             "attention (forward)": [m for m in trainer.model.modules()
                                     if type(m).__name__ == "DeformableMultiHeadAttention"],
             "discriminator (forward)": [trainer.objective.discriminator],
             "perceptual VGG19 (forward)": [m for m in trainer.objective.modules()
                                            if type(m).__name__ == "PerceptualLoss"]}
    ranges: list[Any] = []
    hooks = []
    for label, modules in parts.items():
        for module in modules:
            if module is None:
                continue
            hooks.append(module.register_forward_pre_hook(
                lambda m, a, _l=label: ranges.append(record_function(_l).__enter__())))
            hooks.append(module.register_forward_hook(
                lambda m, a, o: ranges.pop().__exit__(None, None, None)))
    trainer.train_batch(image, mask, target)  # warm-up
    sync(suite.device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA]
                                           if suite.device.type == "cuda" else [])
    began = time.perf_counter()
    with profile(activities=activities) as prof:
        with record_function("training step"):
            trainer.train_batch(image, mask, target)
        sync(suite.device)
    step_s = time.perf_counter() - began
    for hook in hooks:
        hook.remove()
    events = prof.key_averages()
    gpu = suite.device.type == "cuda"

    def total(event: Any) -> float:
        return (event.device_time_total if gpu else event.cpu_time_total) / 1e3  # ms

    def self_time(event: Any) -> float:
        return (event.self_device_time_total if gpu else event.self_cpu_time_total) / 1e3

    named = {e.key: e for e in events}
    step_ms = total(named["training step"]) if "training step" in named else 1000 * step_s
    rows = [{"what": label, "ms": total(named[label]) if label in named else 0.0,
             "share of the step": (total(named[label]) / step_ms if label in named else 0.0)}
            for label in parts]
    rows.append({"what": "training step (profiled, " + ("device" if gpu else "CPU") + " time)",
                 "ms": step_ms, "share of the step": 1.0})
    rows.append(data_loading(suite, size, batch, step_ms))
    kernels = sorted((e for e in events if e.key not in named or e.key not in parts),
                     key=self_time, reverse=True)
    for event in [e for e in kernels if e.key not in parts and e.key != "training step"][:10]:
        rows.append({"what": f"top kernel: {event.key[:70]}", "ms": self_time(event),
                     "share of the step": self_time(event) / step_ms})
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
    from ndmha.evaluate import floor_psnr
    from ndmha.train import train

    size, n, val, batch = (32, 16, 4, 2) if suite.smoke else (256, 1200, 100, 8)
    work = suite.out / "work"
    shutil.rmtree(work, ignore_errors=True)
    try:
        manifest = procedural_manifest(work / "data", n, size, val=val, test=val)
        # the step budget: the slowest network's steps that fit its third of what is left
        amp = "bf16" if suite.device.type == "cuda" else "off"
        probe = {}
        with tempfile.TemporaryDirectory() as tmp:
            scratch = Path(tmp) / "manifest.csv"
            scratch.write_text("bench\n")
            for model in MODELS:
                trainer = _trainer(model, batch, amp, "auto", False, suite.device, scratch)
                image, mask, target = random_batch(batch, size, suite.device, trainer.memory_format)
                probe[model] = time_fn(lambda: trainer.train_batch(image, mask, target),
                                       suite.device, warmup=1, repeat=2)
        left = max(deadline - time.perf_counter(), 1.0)
        steps = 2 if suite.smoke else max(20, int(0.8 * left / 3 / max(probe.values())))
        per_epoch = max(1, (n - 2 * val) // batch)
        epochs = max(2, -(-steps // per_epoch))
        rows = []
        for model in MODELS:
            settings = TrainSettings(architecture=model, epochs=epochs, batch_size=batch,
                                     loss=LOSSES[model], device=str(suite.device), amp=amp,
                                     max_steps=steps, tensorboard=False,
                                     perceptual={"allow_random_perceptual": True})
            began = time.perf_counter()
            history = train(manifest, work / model / "model.pt", work / model / "log.csv",
                            work / model / "last.pt", settings)
            rows.append({"model": model, "steps": history[-1]["steps"],
                         "images seen": history[-1]["images"], "batch": batch,
                         "train s": time.perf_counter() - began,
                         "val PSNR (dB)": history[-1]["val_psnr"],
                         "val SSIM": history[-1]["val_ssim"],
                         "val PSNR by epoch": " / ".join(f"{r['val_psnr']:.2f}" for r in history)})
            print(rows[-1], flush=True)
        for method in ("telea", "biharmonic"):
            rows.append({"model": f"{method} (training-free floor)", "steps": 0,
                         "val PSNR (dB)": floor_psnr(manifest, "val", method)})
            print(rows[-1], flush=True)
        return rows
    finally:
        shutil.rmtree(work, ignore_errors=True)


def part_f(suite: Suite, deadline: float) -> list[dict[str, Any]]:
    """train.deterministic's cost and what it buys (bench/determinism.py, one process a mode)."""
    size, batch, steps = (32, 2, 2) if suite.smoke else (256, 8, 6)
    # the budget guards the GPU's lease; the smoke run checks the code, so a slow shared CPU
    # (18 s alone, over 60 s beside a training job) waits for it instead of failing the part
    timeout = None if suite.smoke else max(60.0, deadline - time.perf_counter())
    rows = determinism.both_modes(str(suite.device), size, batch, steps, timeout=timeout)
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
                       ("e_learning", part_e), ("f_determinism", part_f)):
        suite.run(name, part)
    print(f"\ndone in {suite.elapsed():.0f} s: {suite.out / 'gpu_suite.md'}", flush=True)
    sys.exit(1 if any(p["error"] for p in suite.record["parts"].values()) else 0)


if __name__ == "__main__":
    main()
