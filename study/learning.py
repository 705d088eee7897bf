"""Diagnostic: why does a network learn slowly? Per-layer activation and gradient magnitudes at
initialisation and after N training steps, and the loss curve, side by side for several variants.

For every gated conv, NDMHAL, output head (and the baseline's conv blocks) it prints the RMS of
the layer's output and the RMS of its parameters' gradients (L1 loss of the prediction and of the
coarse output, as the objective), on embedded demo faces with stroke masks, at init and after
``--steps`` Adam steps (lr 2e-4, betas (0.5, 0.99)). A signal that shrinks layer by layer, or
gradients that vanish towards the input, show up as falling columns.

    python study/learning.py --size 64 --batch 8 --steps 50
    python study/learning.py --variants ndmha 'ndmha:{"init": "kaiming"}' ndmha_released
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))  # shared helpers
from _common import machine, print_table  # noqa: E402
from torch import nn  # noqa: E402

from ndmha.data.dataset import mask_tensor, to_tensor  # noqa: E402
from ndmha.data.demo import draw_face, draw_mask  # noqa: E402
from ndmha.data.prepare import overlay  # noqa: E402
from ndmha.models import build_model  # noqa: E402
from ndmha.models.baseline import ConvBlock, UpBlock  # noqa: E402
from ndmha.models.layers import NDMHAL, GatedConv2d  # noqa: E402
from ndmha.train import forward_stages  # noqa: E402

WATCHED = (GatedConv2d, NDMHAL, ConvBlock, UpBlock)


def demo_batches(n: int, size: int, batch: int, seed: int = 0):
    """``n`` demo faces with their stroke masks, as (image, mask, target) batches."""
    faces = [draw_face(size, seed, i) for i in range(n)]
    masks = [draw_mask(size, seed, i) for i in range(n)]
    items = [(to_tensor(overlay(f, m)), mask_tensor(m), to_tensor(f))
             for f, m in zip(faces, masks)]
    return [tuple(torch.stack(t) for t in zip(*items[i:i + batch]))
            for i in range(0, n - batch + 1, batch)]


def watched(model: nn.Module) -> dict[str, nn.Module]:
    """The layers to watch: gated convs, NDMHALs, conv blocks (not nested in another watched
    layer), and the output heads."""
    found: dict[str, nn.Module] = {}
    for name, module in model.named_modules():
        if any(name.startswith(f"{outer}.") for outer in found):
            continue
        if isinstance(module, WATCHED) or name.endswith("head"):
            found[name] = module
    return found


def rms(t: torch.Tensor) -> float:
    return float(t.detach().float().pow(2).mean().sqrt())


def snapshot(model: nn.Module, batch) -> dict[str, tuple[float, float]]:
    """(output RMS, gradient RMS) of every watched layer on one batch."""
    layers = watched(model)
    outputs: dict[str, float] = {}
    hooks = [m.register_forward_hook(lambda mod, inp, out, name=name: outputs.__setitem__(
        name, rms(out[0] if isinstance(out, tuple) else out))) for name, m in layers.items()]
    model.zero_grad(set_to_none=True)
    loss = _loss(model, batch)
    loss.backward()
    for hook in hooks:
        hook.remove()
    grads = {name: math.sqrt(sum(float(p.grad.pow(2).sum()) for p in m.parameters()
                                 if p.grad is not None)
                             / max(1, sum(p.numel() for p in m.parameters())))
             for name, m in layers.items()}
    model.zero_grad(set_to_none=True)
    return {name: (outputs.get(name, float("nan")), grads[name]) for name in layers}


def _loss(model: nn.Module, batch) -> torch.Tensor:
    image, mask, target = batch
    coarse, pred = forward_stages(model, image, mask)
    loss = (pred - target).abs().mean()
    return loss + (coarse - target).abs().mean() if coarse is not None else loss


def parse_variant(text: str) -> tuple[str, str, dict]:
    name, _, options = text.partition(":")
    return text, name, json.loads(options) if options else {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+",
                        default=["baseline", "ndmha", 'ndmha:{"init": "kaiming"}',
                                 'ndmha:{"output": "linear"}', "ndmha_released"],
                        help='architecture, or architecture:{json options}')
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--images", type=int, default=160)
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    batches = demo_batches(args.images, args.size, args.batch)
    probe = batches[0]
    summary = []
    for label, name, options in map(parse_variant, args.variants):
        torch.manual_seed(0)
        model = build_model(name, options, "torch")
        optimizer = torch.optim.Adam(model.parameters(), lr=2e-4, betas=(0.5, 0.99))
        before = snapshot(model, probe)
        losses = []
        for step in range(args.steps):
            loss = _loss(model, batches[step % len(batches)])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss))
        after = snapshot(model, probe)
        rows = [{"layer": layer, "act RMS init": a0, "grad RMS init": g0,
                 f"act RMS @{args.steps}": after[layer][0],
                 f"grad RMS @{args.steps}": after[layer][1]}
                for layer, (a0, g0) in before.items()]
        print_table(f"{label}: per-layer output and gradient RMS, {args.size}px, batch "
                    f"{args.batch}, {machine(torch.device('cpu'))}", rows)
        grads = np.array([g for _, g in before.values()])
        summary.append({"variant": label, "loss first 5": float(np.mean(losses[:5])),
                        f"loss last 5 (@{args.steps})": float(np.mean(losses[-5:])),
                        "grad RMS min/max at init": float(grads.min() / grads.max()),
                        "head act RMS init": np.mean([a for k, (a, _) in before.items()
                                                      if k.endswith("head")])})
    print_table(f"Summary: L1 (+ coarse L1) over {args.steps} steps, {args.size}px, batch "
                f"{args.batch}", summary)


if __name__ == "__main__":
    main()
