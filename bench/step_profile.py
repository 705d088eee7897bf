"""Benchmark: where an NDMHA training step goes, by module and by op, forward and backward.

torch.profiler over a few of the workflow trainer's own steps (after warm-up). Every module of
the generator and the objective is given a profiler range in its forward (a forward pre-hook and
hook); a forward op belongs to its innermost module's part, and a backward op to the part of the
forward op that recorded it (autograd's sequence number links the two). The parts are the
paper's components: the deformable sampling (the DeformConv2d's own op, its offset conv apart),
the offset convs, the DMHA's 1x1 projections and its attention (products, softmax, reshapes),
the LayerNorms, the GFF, the gated convs of each stage, and the loss terms.

    python bench/step_profile.py                          # 64 px, batch 8, both backends
    python bench/step_profile.py --objective full --backends fused
"""

from __future__ import annotations

import argparse
import collections
import tempfile
from pathlib import Path

import torch
from _common import FULL, bench_trainer, machine, print_table, random_batch
from torch import nn
from torch.autograd.profiler import record_function
from torch.profiler import ProfilerActivity, profile

from ndmha.losses import Objective, PerceptualLoss, SobelEdgeLoss
from ndmha.models.discriminator import PatchDiscriminator
from ndmha.models.layers import (
    ChannelLayerNorm,
    DeformableMultiHeadAttention,
    DeformConv2d,
    GatedConv2d,
    GatedDeconv2d,
    GatedFeedForward,
)
from ndmha.models.ndmha import CoarseStage

OBJECTIVES = {"l1": {"l1": 1.0}, "full": FULL}
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


def attribute(events) -> tuple[dict[str, float], dict[str, float]]:
    """Milliseconds (all profiled steps) of each part: forward (self time of the ops in its
    ranges) and backward (the autograd nodes its forward ops recorded)."""
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
                e.cpu_time_total / 1000
        elif not e.name.startswith(PREFIX) and not _inside_backward(e):
            forward[innermost_part(e)] += e.self_cpu_time_total / 1000
    return forward, backward


def _inside_backward(event) -> bool:
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith(BACKWARD):
            return True
        parent = parent.cpu_parent
    return False


def profile_steps(backend: str, objective: str, size: int, batch: int, steps: int,
                  manifest: Path, channels_last: str = "auto") -> tuple[list[dict[str, object]], list[dict[str, object]], float]:
    device = torch.device("cpu")
    trainer = bench_trainer(manifest, device, architecture="ndmha", batch_size=batch,
                            loss=OBJECTIVES[objective], deform_backend=backend,
                            channels_last=channels_last)
    image, mask, target = random_batch(batch, size, device, trainer.memory_format, seed=0)
    for _ in range(2):
        trainer.train_batch(image, mask, target)
    handles = label_modules(trainer.model, trainer.objective)
    try:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(steps):
                trainer.train_batch(image, mask, target)
    finally:
        for handle in handles:
            handle.remove()
    events = prof.events()
    forward, backward = attribute(events)
    total = sum(forward.values()) + sum(backward.values())
    by_part = [{"part": part, "forward ms": forward.get(part, 0.0) / steps,
                "backward ms": backward.get(part, 0.0) / steps,
                "share": (forward.get(part, 0.0) + backward.get(part, 0.0)) / total}
               for part in sorted(set(forward) | set(backward),
                                  key=lambda p: -(forward.get(p, 0.0) + backward.get(p, 0.0)))]
    ops = sorted(prof.key_averages(), key=lambda a: -a.self_cpu_time_total)
    self_total = sum(a.self_cpu_time_total for a in ops)
    by_op = [{"op": a.key, "calls / step": a.count // steps,
              "self ms / step": a.self_cpu_time_total / 1000 / steps,
              "share": a.self_cpu_time_total / self_total} for a in ops[:12]]
    return by_part, by_op, total / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--backends", nargs="+", default=["torch", "fused"])
    parser.add_argument("--objective", nargs="+", choices=list(OBJECTIVES),
                        default=list(OBJECTIVES))
    parser.add_argument("--channels-last", default="auto", choices=["auto", "on", "off"],
                        help="train.channels_last (auto: the trainer's default on this device)")
    args = parser.parse_args()
    where = f"{args.size} px, batch {args.batch}, {machine(torch.device('cpu'))}"
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "manifest.csv"
        manifest.write_text("bench\n")
        for objective in args.objective:
            for backend in args.backends:
                by_part, by_op, total = profile_steps(backend, objective, args.size, args.batch,
                                                      args.steps, manifest,
                                                      args.channels_last)
                what = (f"NDMHA step ({objective}, deformable conv: {backend}, channels_last "
                        f"{args.channels_last}), {where}")
                print_table(f"{what}: by part, {total:.0f} ms a step profiled", by_part)
                print_table(f"{what}: by op (self time)", by_op)


if __name__ == "__main__":
    main()
