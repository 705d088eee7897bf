"""Benchmark: forward + backward time of each DeformConv2d backend at every shape our NDMHA and
the released network run one at, full resolution included.

The shapes are read off the models themselves (a forward hook on every deformable conv of one
forward pass at SIZE x SIZE), so a change of architecture cannot leave a shape out: ours runs
depthwise deformable convs from 1/2 to 1/8 scale, the released network's NDMHALs work at full
resolution with 16 channels. Ratios against the pure-torch reference.

    python bench/deform_conv.py                 # 256 x 256, batch 4 (GPU if present)
    python bench/deform_conv.py --size 64 --batch 2 --repeat 3     # minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch
from _common import bench_model, machine, print_table, time_fn

from ndmha.models.layers import DEFORM_BACKENDS, DeformConv2d, backend_available

MODELS = ("ndmha", "ndmha_released")


@dataclass(frozen=True)
class Shape:
    """One deformable conv as a model runs it (batch aside)."""

    channels: int
    out_channels: int
    groups: int
    side: int
    dilation: int
    modulated: bool

    def label(self, batch: int) -> str:
        kind = "depthwise" if self.groups == self.channels else f"groups {self.groups}"
        return (f"{batch}x{self.channels}x{self.side}x{self.side} {kind}"
                + (f" dil {self.dilation}" if self.dilation > 1 else ""))


def layer_shapes(models: tuple[str, ...], size: int) -> dict[Shape, list[str]]:
    """Every distinct deformable-conv shape of ``models`` at ``size`` px, and which models use it."""
    found: dict[Shape, list[str]] = {}
    for name in models:
        model = bench_model(name, "torch").eval()

        def record(module: DeformConv2d, inputs: tuple, output: torch.Tensor,
                   _name: str = name) -> None:
            x = inputs[0]
            shape = Shape(x.shape[1], module.weight.shape[0],
                          x.shape[1] // module.weight.shape[1], x.shape[-1], module.dilation,
                          module.modulated)
            if _name not in found.setdefault(shape, []):
                found[shape].append(_name)

        hooks = [m.register_forward_hook(record) for m in model.modules()
                 if isinstance(m, DeformConv2d)]
        with torch.no_grad():
            model(torch.zeros(1, 3, size, size), torch.zeros(1, 1, size, size))
        for hook in hooks:
            hook.remove()
    return found


def available_backends() -> tuple[list[str], list[str]]:
    """The backends that import here (the pure-torch reference first), and why the others do
    not."""
    order = ["torch", *(b for b in DEFORM_BACKENDS if b != "torch")]
    checks = {b: backend_available(b) for b in order}
    return ([b for b, (ok, _) in checks.items() if ok],
            [f"{b}: {why}" for b, (ok, why) in checks.items() if not ok])


def measure(shapes: dict[Shape, list[str]], backends: list[str], batch: int,
            device: torch.device, repeat: int, dtype: torch.dtype = torch.float32
            ) -> list[dict[str, object]]:
    """Forward + backward milliseconds per backend and shape, ratios against the first backend,
    and a total row."""
    rows = []
    for shape, users in shapes.items():
        x = torch.randn(batch, shape.channels, shape.side, shape.side, device=device,
                        dtype=dtype, requires_grad=True)
        row: dict[str, object] = {"shape": shape.label(batch), "models": ", ".join(users)}
        for backend in backends:
            torch.manual_seed(0)
            layer = DeformConv2d(shape.channels, shape.out_channels, groups=shape.groups,
                                 dilation=shape.dilation, backend=backend,
                                 modulated=shape.modulated).to(device, dtype)
            with torch.no_grad():
                layer.offset.weight.normal_(0, 0.1)

            def step() -> None:
                layer(x).square().mean().backward()

            row[f"{backend} ms"] = 1000 * time_fn(step, device, repeat=repeat)
        for backend in backends[1:]:
            row[f"{backends[0]} / {backend}"] = row[f"{backends[0]} ms"] / row[f"{backend} ms"]
        rows.append(row)
    total: dict[str, object] = {"shape": "all shapes", "models": ", ".join(MODELS)}
    for key in rows[0] if rows else []:
        if key.endswith(" ms"):
            total[key] = sum(r[key] for r in rows)
    for backend in backends[1:]:
        total[f"{backends[0]} / {backend}"] = (total[f"{backends[0]} ms"]
                                               / total[f"{backend} ms"])
    return [*rows, total]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    backends, skipped = available_backends()
    rows = measure(layer_shapes(MODELS, args.size), backends, args.batch, device, args.repeat)
    print_table(f"DeformConv2d forward + backward, {args.size}px input, batch {args.batch}, "
                f"{machine(device)} (ratio > 1: faster than the pure-torch reference)", rows)
    for line in skipped:
        print(f"\nnot measured: {line}")


if __name__ == "__main__":
    main()
