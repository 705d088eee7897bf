"""Benchmark: the training step, through the workflow's own trainer, in five parts.

- ``variants``: images/s and peak memory of the U-Net, our NDMHA and the released network, for
  every precision (fp32, bf16 autocast), memory format, torch.compile and batch size;
- ``terms``: NDMHA's step with the L1 term alone, then L1 plus each other term of the paper's
  objective, then the full objective: each term's cost is its row minus the L1 row; the U-Net's
  L1 step last;
- ``ratios``: NDMHA's L1 and full steps and its inference against the U-Net's, per deformable
  conv backend, timed side by side in rounds (a machine that drifts moves both sides of a
  ratio); targets: L1 step <= 3x, full step <= 4x, inference <= 3x the U-Net's;
- ``profile``: where one NDMHA step goes, by the paper's components and by op, forward and
  backward (torch.profiler; a backward op counts in the part whose forward op recorded it);
- ``determinism``: what ``train.deterministic`` costs and buys. For each mode (off, then on) a
  fresh process (the switch sets ``CUBLAS_WORKSPACE_CONFIG``, which only counts before CUDA
  starts, and global flags) trains each network twice from one seed on the same batches:
  ``ms/step`` (the median after the first), ``repeat`` (the two runs' weights bitwise equal
  after ``--repeat`` steps, or their largest difference), ``warned`` (the ops torch warned about
  as having no deterministic implementation; one non-deterministic without torch knowing, such
  as torchvision's deformable backward, shows only in ``repeat``). docs/architecture.md
  ("Determinism on a GPU") says what "repeatable" means for each network.

    python bench/train_step.py ratios                        # 64 px, batch 8, 7 rounds
    python bench/train_step.py terms --size 256              # the study's GPU size
    python bench/train_step.py profile --objective full --backends fused
    python bench/train_step.py variants --size 256           # GPU: batch 1 ... 64
    python bench/train_step.py determinism --size 256 --repeat 6   # the GPU figure
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import statistics
import subprocess
import sys
import warnings
from typing import Callable

import torch
from _common import (LOSSES, bench_model, bench_trainer, machine, peak_mib, print_table,
                     random_batch, reset_peak, time_fn)

import inference
from torch import nn
from torch.autograd.profiler import record_function
from torch.profiler import ProfilerActivity, profile

from ndmha.devices import synchronize, time_calls
from ndmha.losses import Objective, PerceptualLoss, SobelEdgeLoss
from ndmha.models.discriminator import PatchDiscriminator
from ndmha.models.layers import (
    AUTO,
    ChannelLayerNorm,
    DeformableMultiHeadAttention,
    DeformConv2d,
    GatedConv2d,
    GatedDeconv2d,
    GatedFeedForward,
    resolve_backend,
)
from ndmha.models.ndmha import CoarseStage

L1 = {"l1": 1.0}
#: the objectives of the terms part (the full one last), by row
TERMS = {"l1": L1, "L1 + edge": {"l1": 1.0, "edge": 0.5},
         "L1 + perceptual (VGG19)": {"l1": 1.0, "perceptual": 0.1},
         "L1 + adversarial (with the D step)": {"l1": 1.0, "adversarial": 0.01},
         "full": LOSSES["ndmha"]}
RATIO_TARGETS = {"L1 step": 3.0, "full step": 4.0, "inference": 3.0}


def step(architecture: str, loss: dict[str, float], args: argparse.Namespace,
         device: torch.device, backend: str | None = None, **settings: object
         ) -> Callable[[], object]:
    """One training step of a fresh trainer on a fixed random batch, as a callable."""
    trainer = bench_trainer(device, architecture=architecture, batch_size=args.batch, loss=loss,
                            backend=backend, **settings)
    batch = random_batch(args.batch, args.size, device, trainer.memory_format, seed=0)
    return lambda: trainer.train_batch(*batch)


def step_flops(trainer, batch: tuple[torch.Tensor, ...]) -> float:
    """FLOPs of one training step: torch.utils.flop_counter's matrix products and convolutions
    (generator, discriminator, perceptual network, forward and backward), and each deformable
    conv as a convolution of its shape (2 x outputs x inputs per group x taps forward, twice that
    backward), its bilinear sampling not counted, as ``count_gmac`` does."""
    from torch.utils.flop_counter import FlopCounterMode

    deform: list[int] = []
    hooks = [m.register_forward_hook(lambda m, i, out: deform.append(
        2 * out.numel() * m.weight.shape[1] * m.taps * 3))
        for m in trainer.model.modules() if isinstance(m, DeformConv2d)]
    try:
        with FlopCounterMode(display=False) as counter:
            trainer.train_batch(*batch)
    finally:
        for hook in hooks:
            hook.remove()
    return float(counter.get_total_flops() + sum(deform))


def variant_row(model: str, batch: int, amp: str, channels_last: str, compile_: bool,
                size: int, device: torch.device, backend: str | None, repeat: int
                ) -> dict[str, object]:
    """One training step's images/s, peak memory and FLOPs (eager rows) in one variant."""
    row: dict[str, object] = {"model": model, "batch": batch, "precision":
                              "bf16" if amp == "bf16" else "fp32",
                              "channels_last": channels_last == "on", "compile": compile_}
    try:
        trainer = bench_trainer(device, architecture=model, batch_size=batch, loss=LOSSES[model],
                                backend=backend, amp=amp, channels_last=channels_last,
                                compile=compile_)
        tensors = random_batch(batch, size, device, trainer.memory_format, seed=0)
        reset_peak(device)
        seconds = time_fn(lambda: trainer.train_batch(*tensors), device,
                          warmup=3 if compile_ else 2, repeat=repeat)
    except torch.OutOfMemoryError:
        torch.cuda.empty_cache()
        return {**row, "images/s": "OOM"}
    row.update({"images/s": batch / seconds, "ms/step": 1000 * seconds,
                "peak MiB": peak_mib(device) or "n/a (CPU)"})
    if not compile_:
        row["TFLOP/step"] = step_flops(trainer, tensors) / 1e12
        row["TFLOP/s"] = row["TFLOP/step"] / seconds
    return row


def variants(args: argparse.Namespace, device: torch.device, backend: str) -> None:
    rows = []
    for model in args.models:
        for amp, channels_last, compile_ in itertools.product(
                ("off", "bf16"), ("off", "on"), (False,) if args.no_compile else (False, True)):
            for batch in args.batches:
                rows.append(variant_row(model, batch, amp, channels_last, compile_, args.size,
                                        device, backend, args.repeat))
                print(rows[-1], flush=True)
    print_table(f"Training step, {args.size}x{args.size}, {machine(device)}, deformable conv: "
                f"{backend}", rows)


def terms(args: argparse.Namespace, device: torch.device, backend: str) -> None:
    seconds = {name: time_fn(step("ndmha", loss, args, device, backend), device,
                             repeat=args.repeat) for name, loss in TERMS.items()}
    unet = time_fn(step("baseline", L1, args, device, backend), device, repeat=args.repeat)
    base, full = seconds["l1"], seconds["full"]
    rows = [{"NDMHA step": name, "ms/step": 1000 * s, "minus L1 only (ms)": 1000 * (s - base),
             "share of the full step": (s - base) / full if name != "l1" else base / full}
            for name, s in seconds.items()]
    rows.append({"NDMHA step": "baseline U-Net, L1 only", "ms/step": 1000 * unet,
                 "minus L1 only (ms)": "", "share of the full step": unet / full})
    print_table(f"NDMHA training step by loss term, {args.size}x{args.size}, batch {args.batch}, "
                f"{machine(device)}, deformable conv: {backend}", rows)


def infer(architecture: str, backend: str, args: argparse.Namespace):
    """A batch's forward on the CPU (bench/inference.py's eager fp32), as a callable."""
    image, mask, _ = random_batch(args.batch, args.size, torch.device("cpu"), seed=0)
    return inference.forward(bench_model(architecture, backend).eval(), image, mask, {},
                             torch.device("cpu"))


def ratios(args: argparse.Namespace, device: torch.device, backend: str) -> None:
    cpu = torch.device("cpu")
    # (row, the row it is divided by, its target, the callable)
    rows: list[tuple[str, str, str | None, Callable[[], object]]] = [
        ("U-Net L1 step", "", None, step("baseline", L1, args, cpu, "torch")),
        ("U-Net inference", "", None, infer("baseline", "torch", args))]
    for b in args.backends:
        rows += [(f"NDMHA L1 step ({b})", "U-Net L1 step", "L1 step",
                  step("ndmha", L1, args, cpu, b)),
                 (f"NDMHA full step ({b})", "U-Net L1 step", "full step",
                  step("ndmha", TERMS["full"], args, cpu, b)),
                 (f"NDMHA inference ({b})", "U-Net inference", "inference",
                  infer("ndmha", b, args))]
    for _ in range(args.warmup):
        for *_, fn in rows:
            fn()
    seconds: dict[str, list[float]] = {name: [] for name, *_ in rows}
    for _ in range(args.repeat):  # a round: every row once, in the same order
        for name, *_, fn in rows:
            seconds[name] += time_calls(fn, cpu, repeat=1, warmup=0)
    table = []
    for name, over, target, _ in rows:
        row: dict[str, object] = {"row": name,
                                  "ms (median)": 1000 * statistics.median(seconds[name])}
        if over:
            ratio = [a / b for a, b in zip(seconds[name], seconds[over])]
            median, bound = statistics.median(ratio), RATIO_TARGETS[target]
            row.update({"x the U-Net (median)": median,
                        "range": f"{min(ratio):.2f}-{max(ratio):.2f}",
                        "target": f"<= {bound:g}x", "met": "yes" if median <= bound else "no"})
        table.append(row)
    print_table(f"NDMHA against the U-Net on the CPU, {args.size} px, batch {args.batch}, "
                f"{args.repeat} rounds side by side, {machine(cpu)}", table)


PREFIX = "part: "
BACKWARD = "autograd::engine::evaluate_function: "


COARSE, FINE = "coarse stage (gated convs)", "fine stage: gated convs, heads"
#: the parts named by a module's own class (the first that matches)
PARTS_BY_CLASS = [
    (DeformConv2d, "deformable sampling"),
    (DeformableMultiHeadAttention, "DMHA: attention (q k^T, softmax, reshapes)"),
    (ChannelLayerNorm, "LayerNorms"),
    (GatedFeedForward, "GFF"),
    (CoarseStage, COARSE),
    (PerceptualLoss, "perceptual (VGG19)"),
    (PatchDiscriminator, "discriminator"),
    (SobelEdgeLoss, "edge loss"),
    (Objective, "L1 and the objective's sums"),
]


def part_of(module: nn.Module, parent: str | None) -> str | None:
    """The part a module's own ops are counted in (None: its parent's)."""
    if parent == "deformable sampling":
        return "offset convs (DeformConv2d.offset)"
    if parent and parent.startswith("DMHA") and isinstance(module, nn.Conv2d):
        return "DMHA: 1x1 projections"
    for kind, part in PARTS_BY_CLASS:
        if isinstance(module, kind):
            return part
    if isinstance(module, (GatedConv2d, GatedDeconv2d)) and parent != COARSE:
        return FINE
    return FINE if parent is None else None  # the generator's own ops (cat, heads)


def label_modules(*roots: nn.Module) -> list[torch.utils.hooks.RemovableHandle]:
    """A profiler range around every module's forward, named by its part."""
    handles = []
    for root in roots:
        parts: dict[nn.Module, str] = {}

        def walk(module: nn.Module, parent: str | None) -> None:
            part = part_of(module, parent) or parent
            parts[module] = part
            for child in module.children():
                walk(child, part)

        walk(root, None)
        for module, part in parts.items():
            ranges: list[record_function] = []

            def enter(_m, _args, _ranges=ranges, _part=part):
                _ranges.append(record_function(PREFIX + _part).__enter__())

            def leave(_m, _args, _out, _ranges=ranges):
                _ranges.pop().__exit__(None, None, None)

            handles += [module.register_forward_pre_hook(enter),
                        module.register_forward_hook(leave)]
    return handles


def innermost_part(event) -> str:
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith(PREFIX):
            return parent.name[len(PREFIX):]
        parent = parent.cpu_parent
    return "optimizer, guard and the rest"


def attribute(events, gpu: bool) -> tuple[dict[str, float], dict[str, float]]:
    """Milliseconds (all profiled steps) of each part: forward (self time of the ops in its
    ranges) and backward (the autograd nodes its forward ops recorded); device time on a GPU."""
    forward: dict[str, float] = collections.defaultdict(float)
    backward: dict[str, float] = collections.defaultdict(float)
    part_of_seq: dict[int, str] = {}
    for e in events:
        if e.name.startswith(PREFIX) or e.name.startswith(BACKWARD):
            continue
        if e.sequence_nr >= 0 and not _inside_backward(e):
            part_of_seq.setdefault(e.sequence_nr, innermost_part(e))
    for e in events:
        if e.name.startswith(BACKWARD):
            backward[part_of_seq.get(e.sequence_nr, "optimizer, guard and the rest")] += \
                (e.device_time_total if gpu else e.cpu_time_total) / 1000
        elif not e.name.startswith(PREFIX) and not _inside_backward(e):
            forward[innermost_part(e)] += (e.self_device_time_total if gpu
                                           else e.self_cpu_time_total) / 1000
    return forward, backward


def _inside_backward(event) -> bool:
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith(BACKWARD):
            return True
        parent = parent.cpu_parent
    return False


def profile_steps(device: torch.device, backend: str | None, objective: str, size: int,
                  batch: int, steps: int, channels_last: str = "auto", amp: str = "off"
                  ) -> tuple[list[dict[str, object]], list[dict[str, object]], float]:
    """NDMHA's step by part and by op (self time) over ``steps`` profiled steps after two
    warm-up steps, and the milliseconds a step; device time on a GPU, CPU time on a CPU."""
    gpu = device.type == "cuda"
    trainer = bench_trainer(device, architecture="ndmha", batch_size=batch, loss=TERMS[objective],
                            backend=backend, channels_last=channels_last, amp=amp)
    tensors = random_batch(batch, size, device, trainer.memory_format, seed=0)
    for _ in range(2):
        trainer.train_batch(*tensors)
    synchronize(device)
    handles = label_modules(trainer.model, trainer.objective)
    try:
        with profile(activities=[ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if gpu
                                                         else [])]) as prof:
            for _ in range(steps):
                trainer.train_batch(*tensors)
            synchronize(device)
    finally:
        for handle in handles:
            handle.remove()
    forward, backward = attribute(prof.events(), gpu)
    total = sum(forward.values()) + sum(backward.values())
    by_part = [{"part": part, "forward ms": forward.get(part, 0.0) / steps,
                "backward ms": backward.get(part, 0.0) / steps,
                "share": (forward.get(part, 0.0) + backward.get(part, 0.0)) / total}
               for part in sorted(set(forward) | set(backward),
                                  key=lambda p: -(forward.get(p, 0.0) + backward.get(p, 0.0)))]

    def own(a) -> float:  # an op's self time, microseconds
        return a.self_device_time_total if gpu else a.self_cpu_time_total

    ops = sorted((a for a in prof.key_averages() if not a.key.startswith(PREFIX)), key=own,
                 reverse=True)
    whole = sum(own(a) for a in ops)
    by_op = [{"op": a.key[:70], "calls / step": a.count // steps,
              "self ms / step": own(a) / 1000 / steps, "share": own(a) / whole}
             for a in ops[:12]]
    return by_part, by_op, total / steps


def profiled(args: argparse.Namespace, device: torch.device, backend: str) -> None:
    where = f"{args.size} px, batch {args.batch}, {machine(device)}"
    for objective in args.objective:
        for b in args.backends:
            by_part, by_op, total = profile_steps(device, b, objective, args.size, args.batch,
                                                  args.repeat, args.channels_last)
            what = (f"NDMHA step ({objective}, deformable conv: {b}, channels_last "
                    f"{args.channels_last}), {where}")
            print_table(f"{what}: by part, {total:.0f} ms a step profiled", by_part)
            print_table(f"{what}: by op (self time)", by_op)


def two_runs(model: str, on: bool, device: torch.device, size: int, batch: int, steps: int
             ) -> dict[str, object]:
    """One architecture trained twice from seed 0 on the same batches, in this process's mode."""
    finals, times, warned = [], [], set()
    for _ in range(2):
        trainer = bench_trainer(device, architecture=model, batch_size=batch,
                                loss=LOSSES[model], deterministic=on, seed=0)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            batches = iter([random_batch(batch, size, device, trainer.memory_format, seed=step)
                            for step in range(steps)])  # the first step untimed
            times += time_calls(lambda: trainer.train_batch(*next(batches)), device,
                                repeat=steps - 1, warmup=1)
        warned |= {str(w.message).split(" does not have")[0][:80] for w in caught
                   if "deterministic" in str(w.message)}
        finals.append(torch.cat([p.detach().float().flatten().cpu()
                                 for p in trainer.model.parameters()]))
    difference = float((finals[0] - finals[1]).abs().max())
    return {"model": model, "deterministic": on, "ms/step": 1000 * statistics.median(times),
            "repeat": "bitwise" if torch.equal(finals[0], finals[1]) else "differs",
            "max abs Δw": difference, "warned": "; ".join(sorted(warned)) or "none"}


def both_modes(device: str, size: int, batch: int, steps: int, timeout: float | None = None
               ) -> list[dict[str, object]]:
    """Off, then on, each in a fresh process; the on rows carry their cost against off."""
    rows = []
    for on in (False, True):
        done = subprocess.run([sys.executable, __file__, "determinism", "--device", device,
                               "--size", str(size), "--batch", str(batch), "--repeat", str(steps),
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


def determinism(args: argparse.Namespace, device: torch.device, backend: str) -> None:
    if args.mode == "both":
        rows = both_modes(args.device, args.size, args.batch, args.repeat)
    else:  # one mode, in this process (what both runs in two)
        rows = [two_runs(m, args.mode == "on", device, args.size, args.batch, args.repeat)
                for m in LOSSES]
    if args.json:
        print(json.dumps(rows))
        return
    print_table(f"train.deterministic on {machine(device)}, {args.size} px, batch {args.batch}, "
                f"{args.repeat} steps per run", rows)


PARTS = {"variants": variants, "terms": terms, "ratios": ratios, "profile": profiled,
         "determinism": determinism}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=list(PARTS))
    parser.add_argument("--size", type=int, default=None, help="default 256 (variants), 64")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 16, 32, 64],
                        help="variants: the batch sizes")
    parser.add_argument("--models", nargs="+", default=list(LOSSES), help="variants")
    parser.add_argument("--repeat", type=int, default=None, help="timed runs (ratios: rounds; "
                        "profile: profiled steps; determinism: steps a run, at least 2)")
    parser.add_argument("--warmup", type=int, default=2, help="ratios: untimed rounds")
    parser.add_argument("--no-compile", action="store_true", help="variants: no compile rows")
    parser.add_argument("--backends", nargs="+", default=["torch", "fused"],
                        help="ratios, profile: the deformable-conv backends compared")
    parser.add_argument("--backend", default=AUTO,
                        help="variants, terms: the deformable convs' backend (auto: fused on a "
                             "CPU, torchvision on a GPU)")
    parser.add_argument("--objective", nargs="+", choices=["l1", "full"], default=["l1", "full"],
                        help="profile")
    parser.add_argument("--channels-last", default="auto", choices=["auto", "on", "off"],
                        help="profile: train.channels_last")
    parser.add_argument("--mode", choices=["on", "off", "both"], default="both",
                        help="determinism: one mode in this process (what both runs in two)")
    parser.add_argument("--json", action="store_true", help="determinism: the rows as JSON")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    args.size = args.size or (256 if args.part == "variants" else 64)
    args.repeat = args.repeat or {"ratios": 7, "profile": 2, "determinism": 6}.get(args.part, 5)
    if args.part == "determinism" and args.repeat < 2:
        parser.error("--repeat must be at least 2 (the first step is not timed)")
    device = torch.device(args.device)
    PARTS[args.part](args, device, resolve_backend(args.backend, device))


if __name__ == "__main__":
    main()
