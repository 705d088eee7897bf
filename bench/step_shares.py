"""Benchmark: where an NDMHA training step goes, one loss term at a time, side by side.

The same generator and batch through the workflow's own trainer with the L1 term alone, then L1
plus one more term of the paper's objective (edge, perceptual on VGG19, adversarial with its
discriminator step), then the full objective: each term's cost is its row minus the L1 row. The
baseline U-Net's L1 step is the last row, for the ratio the demo's job times show.

    python bench/step_shares.py                       # the demo's size: 64 px, batch 8
    python bench/step_shares.py --size 256 --batch 8  # the study's GPU size
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from _common import bench_trainer, machine, print_table, time_fn

from ndmha.models.layers import AUTO, resolve_backend


OBJECTIVES = {
    "L1 only": {"l1": 1.0},
    "L1 + edge": {"l1": 1.0, "edge": 0.5},
    "L1 + perceptual (VGG19)": {"l1": 1.0, "perceptual": 0.1},
    "L1 + adversarial (with the D step)": {"l1": 1.0, "adversarial": 0.01},
    "full objective": {"l1": 1.0, "adversarial": 0.01, "perceptual": 0.1, "edge": 0.5},
}


def step_seconds(architecture: str, loss: dict[str, float], size: int, batch: int,
                 repeat: int, manifest: Path, device: torch.device, backend: str) -> float:
    trainer = bench_trainer(manifest, device, architecture=architecture, batch_size=batch,
                            loss=loss, deform_backend=backend)
    generator = torch.Generator().manual_seed(0)
    target = torch.rand(batch, 3, size, size, generator=generator).to(device)
    mask = (torch.rand(batch, 1, size, size, generator=generator) > 0.7).float().to(device)
    image = target * (1 - mask)
    return time_fn(lambda: trainer.train_batch(image, mask, target), device, repeat=repeat)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--deform-backend", default=AUTO,
                        help="ndmha.deform_backend (auto: fused on a CPU, torchvision on a GPU)")
    args = parser.parse_args()
    device = torch.device(args.device)
    backend = resolve_backend(args.deform_backend, device)
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "manifest.csv"
        manifest.write_text("bench\n")
        seconds = {name: step_seconds("ndmha", loss, args.size, args.batch, args.repeat,
                                      manifest, device, backend)
                   for name, loss in OBJECTIVES.items()}
        baseline = step_seconds("baseline", {"l1": 1.0}, args.size, args.batch, args.repeat,
                                manifest, device, backend)
    base, full = seconds["L1 only"], seconds["full objective"]
    rows = [{"NDMHA step": name, "ms/step": 1000 * s, "minus L1 only (ms)": 1000 * (s - base),
             "share of the full step": (s - base) / full if name != "L1 only" else base / full}
            for name, s in seconds.items()]
    rows.append({"NDMHA step": "baseline U-Net, L1 only", "ms/step": 1000 * baseline,
                 "minus L1 only (ms)": "", "share of the full step": baseline / full})
    print_table(f"NDMHA training step by loss term, {args.size}x{args.size}, batch {args.batch}, "
                f"{machine(device)}, deformable conv: {backend}", rows)


if __name__ == "__main__":
    main()
