"""TensorBoard event files of a training run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ndmha import distributed
from ndmha.train.settings import TrainSettings

METRICS = ("l1", "psnr", "ssim")


class Board:
    """TensorBoard event files of one run (rank 0): the loss terms, the discriminator's loss,
    the learning rate and the guard's counters every ``log_every`` steps; the per-epoch metrics;
    a grid of fixed monitored images (input | prediction | ground truth) every epoch. A resumed
    run purges what a killed one logged after its checkpoint (the steps after ``step``, the
    checkpoint's), so no step appears twice and the checkpointed epochs keep their points."""

    def __init__(self, log_dir: Path | None, settings: TrainSettings, step: int) -> None:
        self.writer = None
        if log_dir is not None and settings.tensorboard and distributed.Ranks.from_env().main:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(log_dir), purge_step=step + 1 if step > 0 else None)
        self.every = max(1, settings.log_every)

    def step(self, step: int, losses: dict[str, torch.Tensor], lr: float, skipped: int,
             restores: int, ok: torch.Tensor | bool = True) -> None:
        """The scalars of this step (called every ``log_every`` steps, when the host reads the
        device anyway); a skipped step's losses are not logged."""
        if self.writer is None or step % self.every:
            return
        if bool(ok):
            for name, value in losses.items():
                self.writer.add_scalar(f"train/{name}", float(value), step)
        self.writer.add_scalar("train/lr", lr, step)
        self.writer.add_scalar("train/skipped_steps", skipped, step)
        self.writer.add_scalar("train/restores", restores, step)

    def epoch(self, step: int, row: dict[str, Any], grid: torch.Tensor | None) -> None:
        if self.writer is None:
            return
        for key in (f"{p}_{m}" for p in ("train", "val") for m in METRICS):
            if key in row:
                self.writer.add_scalar(f"epoch/{key}", row[key], step)
        self.writer.add_scalar("epoch/epoch", row["epoch"], step)
        if grid is not None:
            self.writer.add_image("predictions", grid, step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
