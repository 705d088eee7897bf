"""Shared helpers of the benchmarks and the study's scripts: a trainer and a model to time, random
batches, timing with warm-up and device sync, peak memory, tables."""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path
from typing import Callable

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout: bench/x.py

from ndmha.devices import time_calls  # noqa: E402

#: the objectives the benchmarks train with: the demo's, per architecture
FULL = {"l1": 1.0, "adversarial": 0.01, "perceptual": 0.1, "edge": 0.5}
LOSSES = {"baseline": {"l1": 1.0}, "ndmha": FULL, "ndmha_released": FULL}


def bench_trainer(device: torch.device, manifest: Path | None = None, backend: str | None = None,
                  **settings: object):
    """A training run's state (``ndmha.train.Trainer``) for timing its steps: one epoch's
    settings, random VGG19 weights allowed, generator and objective in training mode;
    ``settings`` are TrainSettings fields (architecture, batch_size, loss, amp, ...), ``backend``
    the one the model's deformable convs compute on (default the process's). ``manifest``: the
    data a step may read (default none: the steps are fed random batches)."""
    from ndmha.models.layers import pin_backend
    from ndmha.train import Trainer, TrainSettings

    if manifest is None:
        manifest = Path(tempfile.mkdtemp(prefix="ndmha-bench-")) / "manifest.csv"
        manifest.write_text("bench\n")
    config = TrainSettings(epochs=1, device=str(device),
                           perceptual={"allow_random_perceptual": True}, **settings)
    trainer = Trainer(config, manifest, manifest.with_suffix(".pt"))
    if backend is not None:
        pin_backend(trainer.model, str(backend))
    trainer.model.train()
    trainer.objective.train()
    return trainer


def bench_model(architecture: str, backend: str) -> torch.nn.Module:
    """A fresh model of ``architecture`` (its default options) on deformable-conv ``backend``."""
    from ndmha.models import build_model
    from ndmha.models.layers import pin_backend

    model = build_model(architecture)
    pin_backend(model, backend)
    return model


def random_batch(batch: int, size: int, device: torch.device,
                 fmt: torch.memory_format = torch.contiguous_format, seed: int | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A training batch (corrupted image, mask with ~30 % holes, target) drawn on the CPU from
    its own generator (``seed``, default the batch size), the same on every device."""
    g = torch.Generator().manual_seed(batch if seed is None else seed)
    target = torch.rand(batch, 3, size, size, generator=g)
    mask = (torch.rand(batch, 1, size, size, generator=g) > 0.7).float()
    return tuple(t.to(device).contiguous(memory_format=fmt)
                 for t in (target * (1 - mask), mask, target))


def time_fn(fn: Callable[[], object], device: torch.device, warmup: int = 2, repeat: int = 5
            ) -> float:
    """Median seconds of ``fn`` over ``repeat`` synchronised runs after ``warmup`` runs (the
    package's one timer, :func:`ndmha.devices.time_calls`)."""
    return statistics.median(time_calls(fn, device, repeat, warmup))


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_mib(device: torch.device) -> float | None:
    """Peak allocated GPU memory since the last reset, MiB (None on the CPU)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return None


def machine(device: torch.device) -> str:
    """The GPU's name, or the CPU model and its threads (ndmha.devices.device_name)."""
    from ndmha.devices import device_name

    return device_name(device)


def markdown_table(rows: list[dict[str, object]]) -> str:
    """Rows as a GitHub Markdown table: every key a column, floats to 4 significant digits."""
    if not rows:
        return "(no rows)"
    columns = list(dict.fromkeys(k for row in rows for k in row))
    cells = pd.DataFrame([[f"{v:.4g}" if isinstance(v, float) else str(v)
                           for v in (row.get(c, "") for c in columns)] for row in rows],
                         columns=columns)
    return cells.to_markdown(index=False, tablefmt="github", disable_numparse=True)


def print_table(title: str, rows: list[dict[str, object]]) -> None:
    """A Markdown table on stdout (paste it into docs/performance.md)."""
    print(f"\n### {title}\n\n{markdown_table(rows)}")
    sys.stdout.flush()
