"""One training loop for every experiment: seeded, logged per epoch (and to TensorBoard every few
steps), checkpointed and resumable, with its budget and provenance recorded.

Per epoch the log holds the budget so far (``steps``: optimizer steps, ``images``: training images
seen over all processes, ``wall_seconds``), the objective (``loss``, on the raw prediction) and
each of its terms, the discriminator's loss when there is one, and L1, PSNR and SSIM of the
composite (prediction in the holes, input elsewhere) for the training and validation images. When
the split has no validation images (the paper's 27k / 3k scheme), or they are trained on, the test
split is monitored instead and ``val_split`` says so; nothing is selected on it (the last epoch's
weights are kept).

With an adversarial term the generator and the discriminator alternate on every batch: one
discriminator step on the detached output, then one generator step. Gradients are clipped, AMP
(bf16) is used on GPU when enabled, and a guard skips any step whose loss or gradients are not
finite; after ``nan_patience`` such steps in a row it restores the last good checkpoint and
multiplies the learning rates by ``nan_lr_factor``. The log counts both.

The checkpoint (generator, discriminator, optimizers, completed epoch, history, RNG states) is
written atomically after every epoch outside Snakemake's outputs, so a killed or failed job resumes
from it when the rule runs again; the one before it is kept beside it (``<name>.prev``) and used,
with a warning, when the last cannot be read. On SIGTERM or SIGUSR1 the step in flight finishes,
a mid-epoch checkpoint is written (the epoch's position, its running sums and the guard's
counters with it) and the run stops with :class:`TrainingInterrupted`; ``checkpoint_minutes``
also writes one at most that often, so a kill without warning loses at most that much. A run
resumed mid-epoch continues with the epoch's next batch, in the same order. It is tied to a fingerprint of the settings that shape training
(architecture and options, batch size, learning rate, loss, seed, masks, manifest contents); the
number of epochs and ``max_steps`` are not part of it, so raising them continues a finished run.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import logging
import math
import os
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from ndmha import distributed, provenance
from ndmha.foreign_weights import init_weights
from ndmha.model_files import load_torch, save_torch
from ndmha.data.dataset import EpochSampler, InpaintingDataset
from ndmha.errors import DataError, TrainingInterrupted
from ndmha.io import atomic_open
from ndmha.losses import Objective, PerceptualSettings
from ndmha.models import build_model, count_parameters
from ndmha.train.board import Board
from ndmha.train.reproducibility import deterministic, rng_state, set_rng_state
from ndmha.train.running import NonFiniteGuard, RunningMeans, finite
from ndmha.devices import device_name, resolve_device, time_calls
from ndmha.train.settings import TrainSettings, autocast

log = logging.getLogger("ndmha")

#: the columns of the epoch log that measure time: the only ones two equal runs may differ in
TIMING_COLUMNS = ["seconds", "wall_seconds"]
#: what stops a run cleanly: SLURM's signal ahead of a time limit (``--signal``), a preemption's
#: or scancel's SIGTERM
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGUSR1")
                     if hasattr(signal, name))


def forward_stages(model: nn.Module, image: torch.Tensor, mask: torch.Tensor
                   ) -> tuple[torch.Tensor | None, torch.Tensor]:
    """(coarse output or None, final output) of a model, or of its DDP wrapper."""
    net = model.module if isinstance(model, DistributedDataParallel) else model
    if getattr(net, "coarse_to_fine", False):
        return model(image, mask, return_coarse=True)
    return None, model(image, mask)


def _to_device(batch: dict[str, Any], device: torch.device,
               memory_format: torch.memory_format = torch.contiguous_format,
               dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, ...]:
    return tuple(batch[k].to(device, dtype, non_blocking=True, memory_format=memory_format)
                 for k in ("image", "mask", "target"))


def _progress(loader: Iterable, desc: str, total: int | None = None) -> Iterable:
    return tqdm(loader, desc=desc, total=total, mininterval=5.0, unit="batch", file=sys.stderr,
                leave=False,
                disable=not distributed.Ranks.from_env().main)  # one progress bar: rank 0's


def _loss_parts(total: torch.Tensor, parts: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {"loss": total.detach(), **{f"loss_{k}": v.detach() for k, v in parts.items()}}


@torch.inference_mode()
def evaluate(model: nn.Module, loader: DataLoader, objective: Objective, device: torch.device,
             prefix: str, amp: str = "off", dtype: torch.dtype = torch.float32
             ) -> dict[str, float]:
    """Mean objective, its terms and composite metrics of ``model`` over ``loader``, the model and
    the objective in eval mode (the discriminator's spectral norm then reads its power-iteration
    vectors without updating them: evaluating must not change what trains)."""
    model.eval()
    objective.eval()
    means = RunningMeans()
    for batch in _progress(loader, prefix):
        image, mask, target = _to_device(batch, device, dtype=dtype)
        with autocast(device, amp, dtype):
            coarse, pred = forward_stages(model, image, mask)
            total, parts = objective(pred, target, mask, image, coarse)
        means.add(len(image), _loss_parts(total, parts), pred.float(), image, mask, target)
    return means.result(prefix)


@dataclass
class EpochCut:
    """An epoch cut short (a stop signal, or a timed checkpoint): where it stands and the running
    state a resumed run continues from. Stored in the checkpoint as a plain dict (``vars``), so
    that ``torch.load(weights_only=True)`` reads it."""

    batches: int          # batches of the epoch done
    step: int             # optimizer steps in all
    images: int           # images seen in all (every rank's)
    rng: dict[str, Any]   # the random state after the last batch
    means: dict[str, Any]  # the epoch's running means (RunningMeans.state)
    guard: dict[str, Any]  # the non-finite guard's counters (NonFiniteGuard.state)
    restores: int         # checkpoints restored this epoch
    bad_in_a_row: int     # non-finite steps in a row so far
    seconds: float        # the epoch's wall time so far


class Trainer:
    """The state of one run: networks, optimizers, history, budget and the non-finite guard."""

    def __init__(self, settings: TrainSettings, manifest: Path, checkpoint: Path) -> None:
        self.settings = settings
        self.checkpoint = checkpoint
        if settings.deterministic:
            deterministic()
        self.ranks, device = distributed.init(settings.device)
        self.device = device or resolve_device(settings.device)
        self.fingerprint = settings.fingerprint(manifest, self.device)
        torch.manual_seed(settings.seed)
        self.memory_format = settings.memory_format(self.device)
        self.dtype = settings.torch_dtype
        self.model = build_model(settings.architecture, settings.options,
                                 key=f"experiments.{settings.experiment}.options"
                                 ).to(self.device, self.dtype, memory_format=self.memory_format)
        # the networks that train through DistributedDataParallel when there are several ranks
        self.train_model = self._ddp(self.model)

        def stages(image: torch.Tensor, mask: torch.Tensor
                   ) -> tuple[torch.Tensor | None, torch.Tensor]:
            return forward_stages(self.train_model, image, mask)

        self.stages = torch.compile(stages) if settings.compile else stages
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = settings.cudnn_benchmark and not settings.deterministic
        self.objective = Objective(settings.loss, key=f"loss.{settings.experiment}",
                                   perceptual=PerceptualSettings(**settings.perceptual)
                                   ).to(self.device, self.dtype)
        betas = tuple(settings.betas)
        self.lr = settings.effective_lr()  # the base rate (lowered by restores), before warm-up
        # fused Adam: its kernel takes the step's found_inf flag and skips the whole update on
        # the device where it is set, as torch.amp.GradScaler uses it (see _step)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.lr, betas=betas,
                                          fused=True)
        self.d_optimizer = (torch.optim.Adam(self.objective.discriminator.parameters(),
                                             lr=self.lr, betas=betas, fused=True)
                            if self.objective.discriminator is not None else None)
        self.train_discriminator = (self._ddp(self.objective.discriminator)
                                    if self.objective.discriminator is not None else None)
        self.init_source = self._start_from(settings.init_from) if settings.init_from else None
        self.history: list[dict[str, Any]] = []
        self.epoch = 0
        self.bad_in_a_row = 0
        self.initial = copy.deepcopy(self._networks())
        self.cut: EpochCut | None = None    # an epoch cut short, from the checkpoint
        self.stop_signal: int | None = None         # set by the signal handler (stop_on_signals)
        self.saved_at = time.monotonic()

    def _start_from(self, path: str) -> dict[str, Any]:
        """Fine-tuning: the generator (and a training checkpoint's discriminator) from ``path``;
        the optimizers start fresh. Returns where it started from, for the budget."""
        s = self.settings
        start = init_weights(path, s.architecture, s.options,
                             key=f"experiments.{s.experiment}.init_from")
        self.model.load_state_dict(start["model"])
        fresh = ["the optimizers"]
        if self.objective.discriminator is not None:
            if start["discriminator"] is not None:
                self.objective.discriminator.load_state_dict(start["discriminator"])
            else:
                fresh.insert(0, "the discriminator")
        source = {**start["source"], "starts_fresh": " and ".join(fresh)}
        log.info("fine-tuning %s from %s (%s, sha256 %s..., %s steps before); %s start fresh",
                 s.experiment, path, source["was"], source["sha256"][:12],
                 source["steps_before"], source["starts_fresh"])
        return source

    # budget so far, from the last epoch's row
    @property
    def step(self) -> int:
        return int(self.history[-1]["steps"]) if self.history else 0

    @property
    def resumed_step(self) -> int:
        """The step training continues after: a mid-epoch checkpoint's, else the last epoch's."""
        return self.cut.step if self.cut else self.step

    @property
    def previous(self) -> Path:
        """The checkpoint before the last, kept for when the last cannot be read."""
        return self.checkpoint.with_name(self.checkpoint.name + ".prev")

    def _ddp(self, module: nn.Module) -> nn.Module:
        if not self.ranks.distributed:
            return module
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids)

    def _networks(self) -> dict[str, Any]:
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "lr": self.lr}
        if self.d_optimizer is not None:
            state["discriminator"] = self.objective.discriminator.state_dict()
            state["d_optimizer"] = self.d_optimizer.state_dict()
        return state

    def _load_networks(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr = float(state.get("lr", self.lr))
        if self.d_optimizer is not None:
            self.objective.discriminator.load_state_dict(state["discriminator"])
            self.d_optimizer.load_state_dict(state["d_optimizer"])

    def _read_checkpoint(self) -> tuple[dict[str, Any], Path] | None:
        """The newest readable checkpoint (the last, else the one before it) and its file; None
        when there is none. A file that cannot be read (truncated by a copy, a disk that lied)
        is named in a warning and the one before it used; when none can be read the run stops
        with both named rather than start afresh over them."""
        unreadable = []
        for path in (self.checkpoint, self.previous):
            if not path.exists():
                continue
            try:
                state = load_torch(path)
            except Exception as err:  # a truncated zip, a bad pickle: torch raises many kinds
                log.warning("checkpoint %s cannot be read (%s: %s)", path, type(err).__name__,
                            str(err)[:200])
                unreadable.append(str(path))
                continue
            if unreadable:
                log.warning("resuming from the checkpoint before it, %s", path)
            return state, path
        if unreadable:
            raise DataError(f"no checkpoint of {self.settings.experiment} can be read: "
                            f"{' and '.join(unreadable)}; move them away to train afresh")
        return None

    def _saved_state(self) -> dict[str, Any] | None:
        """The checkpoint on disk if it belongs to this run's settings."""
        found = self._read_checkpoint()
        if found is None or found[0].get("fingerprint") != self.fingerprint:
            return None
        return found[0]

    def resume(self) -> None:
        found = self._read_checkpoint()
        if found is None:
            return
        state, path = found
        if state.get("fingerprint") != self.fingerprint:
            precision = self.settings.precision(self.device)
            log.warning("%s was written with other settings or data (its precision: %s, this "
                        "run's: %s on %s); starting afresh", path,
                        state.get("precision", "not recorded"), precision, self.device.type)
            return
        self._load_networks(state)
        set_rng_state(state["rng"], self.device)
        self.history = list(state["history"])
        self.epoch = int(state["epoch"])
        self.cut = EpochCut(**state["partial"]) if state.get("partial") else None
        if self.cut is None:
            log.info("resuming %s from %s after epoch %d (%d steps)", self.settings.experiment,
                     path, self.epoch, self.step)
        else:
            log.info("resuming %s from %s in epoch %d, after its batch %d (%d steps)",
                     self.settings.experiment, path, self.epoch + 1, self.cut.batches,
                     self.cut.step)

    def save(self, cut: EpochCut | None = None) -> None:
        """The checkpoint, written by rank 0 while the others wait; ``cut``: the position and
        running state of an epoch cut short. The last checkpoint becomes ``.prev``."""
        if self.ranks.main:
            began = time.perf_counter()
            state = {**self._networks(), "epoch": self.epoch, "history": self.history,
                     "rng": rng_state(self.device), "fingerprint": self.fingerprint,
                     "precision": self.settings.precision(self.device),
                     "partial": vars(cut) if cut is not None else None}
            if self.checkpoint.exists():
                os.replace(self.checkpoint, self.previous)
            save_torch(state, self.checkpoint)
            if cut is not None:
                log.info("checkpoint at step %d, batch %d of epoch %d (%.2f s to write)",
                         cut.step, cut.batches, self.epoch + 1,
                         time.perf_counter() - began)
        distributed.barrier()
        self.saved_at = time.monotonic()

    def _pause(self, step: int, every: int) -> tuple[bool, bool]:
        """(write a mid-epoch checkpoint now, then stop): after a stop signal, or when
        ``checkpoint_minutes`` have passed since the last write. Under DDP the ranks decide
        together every ``every`` steps (one all-reduce), so all stop at the same step."""
        minutes = self.settings.checkpoint_minutes
        due = minutes > 0 and time.monotonic() - self.saved_at >= 60 * minutes
        stop = self.stop_signal is not None
        if self.ranks.distributed:
            if step % every:
                return False, False
            stops, dues = distributed.all_sum([float(stop), float(due)], self.device)
            stop, due = stops > 0, dues > 0
        return stop or due, stop

    def _set_lr(self, step: int) -> float:
        """The rate of this step: the current base rate (lowered by each restore) times the
        schedule's factor (:meth:`TrainSettings.lr_factor`)."""
        lr = self.lr * self.settings.lr_factor(step)
        for optimizer in (self.optimizer, self.d_optimizer):
            for group in (optimizer.param_groups if optimizer is not None else []):
                group["lr"] = lr
        return lr

    def _check(self, guard: "NonFiniteGuard", step: int) -> int:
        """The non-finite guard, read on the host (one sync): say what was skipped since the last
        look, and restore the last good state (returns 1) when ``nan_patience`` steps in a row
        were skipped. The skipped steps changed nothing, so a restore that comes up to
        ``log_every - 1`` steps after the run of bad steps only loses the good steps between."""
        skipped, longest, _ = guard.read()
        if not skipped:
            return 0
        self.bad_in_a_row = longest
        log.warning("non-finite loss or gradients at epoch %d: %d of the steps up to step %d "
                    "skipped; the longest run: step skipped (%d in a row)", self.epoch + 1,
                    skipped, step, longest)
        if longest < self.settings.nan_patience:
            return 0
        self._restore_last_good()
        guard.reset_run()
        return 1

    def _restore_last_good(self) -> None:
        """After too many non-finite steps: back to the last checkpoint, lower learning rate."""
        lr = self.lr * self.settings.nan_lr_factor
        state = self._saved_state()
        self._load_networks(state if state is not None else self.initial)
        self.lr = lr
        log.warning("%d non-finite steps in a row: restored %s, learning rate now %.3g",
                    self.bad_in_a_row, "the last checkpoint" if state is not None
                    else "the initial weights", lr)
        self.bad_in_a_row = 0

    def _step(self, optimizer: torch.optim.Optimizer, loss: torch.Tensor,
              params: Iterator[nn.Parameter]) -> torch.Tensor:
        """Backward, clip, step, decided on the device: whether the loss and the gradient norm
        are finite on every rank is a bool tensor (returned), handed to fused Adam as its
        ``found_inf`` (1: skip), so a non-finite step changes no weight, no moment and no step
        count, and nothing waits for the host."""
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for p in params if p.grad is not None]
        clip = self.settings.grad_clip if self.settings.grad_clip > 0 else math.inf
        norm = torch.nn.utils.clip_grad_norm_(params, clip)  # NaN when a gradient is
        ok = distributed.all_true(finite(loss, norm))      # every rank skips together
        optimizer.found_inf = (~ok).to(torch.float32)
        optimizer.step()
        return ok

    def train_batch(self, image: torch.Tensor, mask: torch.Tensor, target: torch.Tensor
                    ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        """One generator (and discriminator) update; returns losses, prediction and whether it
        was applied (a bool tensor on the device)."""
        amp = (self.device, self.settings.amp, self.dtype)
        with autocast(*amp):
            coarse, pred = self.stages(image, mask)
        losses: dict[str, torch.Tensor] = {}
        ok = torch.ones((), dtype=torch.bool, device=pred.device)
        discriminator = self.objective.discriminator
        if discriminator is not None:
            # (requires_grad stays on: toggling it would drop DDP's gradient hooks; the grads the
            # generator step leaves in the discriminator are zeroed before its next step)
            with autocast(*amp):
                d_loss = self.objective.discriminator_loss(pred, target, mask, image,
                                                           self.train_discriminator)
            ok = self._step(self.d_optimizer, d_loss, discriminator.parameters())
            losses["d_loss"] = d_loss.detach()
        with autocast(*amp):
            total, parts = self.objective(pred, target, mask, image, coarse)
        ok = self._step(self.optimizer, total, self.model.parameters()) & ok
        return {**_loss_parts(total, parts), **losses}, pred.detach().float(), ok

    def time_steps(self, manifest: str | Path, steps: int, warmup: int = 1) -> list[float]:
        """Seconds of each of ``steps`` training steps on one batch of ``manifest``'s training
        images (the configured batch and objective, on this trainer's device, synchronised on a
        GPU), after ``warmup`` untimed ones: the steady-state step a projection multiplies. The
        steps update the weights: a trainer that timed is not trained on afterwards."""
        train_set = _datasets(Path(manifest), self.settings)[0]
        batch = torch.utils.data.default_collate(
            [train_set[i % len(train_set)] for i in range(self.settings.batch_size)])
        tensors = _to_device(batch, self.device, self.memory_format, self.dtype)
        self.model.train()
        self.objective.train()
        return time_calls(lambda: self.train_batch(*tensors), self.device, steps, warmup)

    def run_epoch(self, loader: DataLoader, val_loader: DataLoader, val_split: str,
                  board: Board) -> None:
        s = self.settings
        cut, self.cut = self.cut, None
        began = time.perf_counter() - (cut.seconds if cut else 0.0)
        self.model.train()
        self.objective.train()
        means = RunningMeans()
        guard = NonFiniteGuard(self.device)
        restores, batches = 0, 0
        step, images = self.step, self.history[-1]["images"] if self.history else 0
        if cut is not None:  # the epoch a stop or a timed checkpoint cut short
            means.load(cut.means, self.device)
            guard.load(cut.guard)
            restores, batches = cut.restores, cut.batches
            step, images = cut.step, cut.images
            self.bad_in_a_row = cut.bad_in_a_row
        batches_left = iter(loader)
        if cut is not None:  # starting the loader drew from the RNG: back to the checkpoint's
            set_rng_state(cut.rng, self.device)
        desc = f"{s.experiment} epoch {self.epoch + 1}/{s.epochs}"
        for batch in _progress(batches_left, desc, total=len(loader)):
            if s.max_steps is not None and step >= s.max_steps:
                break
            image, mask, target = _to_device(batch, self.device, self.memory_format, self.dtype)
            lr = self._set_lr(step)
            losses, pred, ok = self.train_batch(image, mask, target)
            step += 1
            images += len(image) * self.ranks.world
            means.add(len(image), losses, pred, image, mask, target, ok)
            guard.add(ok)
            if step % board.every == 0:  # the host looks once per log_every steps
                restores += self._check(guard, step)
                board.step(step, losses, lr, guard.skipped, restores, ok)
            batches += 1
            write, stop = self._pause(step, board.every)
            if write:
                self.save(EpochCut(batches, step, images, rng_state(self.device), means.state(),
                                   guard.state(), restores, self.bad_in_a_row,
                                   time.perf_counter() - began))
            if stop:
                raise TrainingInterrupted(
                    f"{s.experiment}: stopped by {signal.Signals(self.stop_signal).name} at "
                    f"step {step} (epoch {self.epoch + 1}, batch {batches}); its checkpoint "
                    f"{self.checkpoint} is written, running the job again resumes there")
        restores += self._check(guard, step)
        self.epoch += 1
        # the same keys on every rank: steps are skipped by all or none
        keys, totals = means.totals()
        means_row = means.result("train", (keys, distributed.all_sum(totals, self.device)))
        skipped = guard.skipped
        seconds = time.perf_counter() - began
        wall = (self.history[-1]["wall_seconds"] if self.history else 0.0) + seconds
        row = {"epoch": self.epoch, "steps": step, "images": images,
               "wall_seconds": round(wall, 3), **means_row,
               **evaluate(self.model, val_loader, self.objective, self.device, "val", s.amp,
                          self.dtype),
               "val_split": val_split, "skipped_steps": skipped, "restores": restores,
               "lr": self.lr * s.lr_factor(max(step - 1, 0)),  # the epoch's last step's rate
               "seconds": round(seconds, 3)}
        self.history.append(row)
        log.info("epoch %d/%d (%d steps, %d images): %s", self.epoch, s.epochs, step, images,
                 " ".join(f"{k}={v:.4g}" for k, v in row.items() if isinstance(v, float)))
        board.epoch(step, row, self._grid(val_loader) if board.writer is not None else None)
        self.save()

    @torch.inference_mode()
    def _grid(self, loader: DataLoader) -> torch.Tensor:
        """Masked input | prediction | ground truth for the first monitored images."""
        from torchvision.utils import make_grid

        batch = next(iter(loader))
        n = self.settings.board_images
        image, mask, target = (t[:n] for t in _to_device(batch, self.device, dtype=self.dtype))
        self.model.eval()
        _, pred = forward_stages(self.model, image, mask)
        rows = torch.stack([image, pred.clamp(0, 1), target], dim=1).flatten(0, 1)
        return make_grid(rows.float().cpu(), nrow=3, padding=1)

    def budget(self, train_images: int) -> dict[str, Any]:
        """What this run cost: the figures every table row carries."""
        last = self.history[-1] if self.history else {}
        return {"epochs": self.epoch, "steps": self.step, "images_seen": last.get("images", 0),
                "batch_size": self.settings.batch_size, "processes": self.ranks.world,
                "train_images": train_images, "max_steps": self.settings.max_steps,
                "train_seconds": last.get("wall_seconds", 0.0),
                "train_device": device_name(self.device),
                **({"init_from": self.init_source} if self.init_source else {})}


def _datasets(manifest: Path, s: TrainSettings
              ) -> tuple[InpaintingDataset, InpaintingDataset, InpaintingDataset]:
    """The training images, the monitored ones (the validation split unless it is trained on or
    empty, else the test split) and the test split."""
    train_set = InpaintingDataset(manifest, s.train_splits, s.masks, s.seed, s.max_train_images)
    if len(train_set) == 0:
        raise ValueError(f"{manifest}: no {train_set.split} images to train on")
    test_set = InpaintingDataset(manifest, "test")
    val_set = InpaintingDataset(manifest, "val")
    if len(val_set) == 0 or "val" in s.train_splits:
        val_set = test_set
    return train_set, val_set, test_set


def _loaders(trainer: Trainer, train_set: InpaintingDataset, val_set: InpaintingDataset
             ) -> tuple[DataLoader, EpochSampler, DataLoader, dict[str, Any]]:
    """The training loader and its sampler, the monitored images' loader, and the loaders'
    shared arguments (for the test split's)."""
    s = trainer.settings
    loader_args = {"batch_size": s.batch_size, "num_workers": s.num_workers,
                   "pin_memory": trainer.device.type == "cuda",
                   "persistent_workers": s.persistent_workers and s.num_workers > 0}
    # one shard of every epoch's seeded permutation per rank (the whole of it with one process):
    # rank r's batch k holds the images r, r + world, ... of the single-process batch k
    sampler = EpochSampler(train_set, num_replicas=trainer.ranks.world, rank=trainer.ranks.rank,
                           shuffle=True, seed=s.seed)
    return (DataLoader(train_set, sampler=sampler, **loader_args), sampler,
            DataLoader(val_set, shuffle=False, **loader_args), loader_args)


def _model_file(trainer: Trainer, manifest: Path, train_images: int, test_loss: float
                ) -> dict[str, Any]:
    """What ``model.pt`` holds: the trained weights and what they are (architecture and options,
    budget, the objective's warnings, provenance)."""
    s = trainer.settings
    return {"architecture": s.architecture, "options": s.options, "experiment": s.experiment,
            "state_dict": trainer.model.state_dict(),
            "parameters": count_parameters(trainer.model), "epochs": trainer.epoch,
            "budget": trainer.budget(train_images), "test_loss": test_loss,
            "warnings": trainer.objective.warnings,
            "provenance": provenance.collect(trainer.device, asdict(s), manifest)}


def train(manifest: str | Path, model_out: str | Path, log_csv: str | Path,
          checkpoint: str | Path, settings: TrainSettings,
          tensorboard_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """Train ``settings.experiment`` on the manifest's training images; write the weights (with
    the run's budget and provenance) and the epoch log. Resumes from ``checkpoint`` when it exists
    with the same fingerprint; ``tensorboard_dir`` receives the event files. The deformable convs
    compute on the process's backend (:func:`ndmha.models.layers.set_backend`): not a
    training setting, it changes nothing learned beyond float rounding."""
    manifest = Path(manifest)
    trainer = Trainer(settings, manifest, Path(checkpoint))
    ranks = trainer.ranks
    if not ranks.main:
        log.setLevel(logging.WARNING)  # rank 0 alone writes the log
    trainer.resume()
    train_set, val_set, test_set = _datasets(manifest, settings)
    loader, sampler, val_loader, loader_args = _loaders(trainer, train_set, val_set)
    log.info("training %s (%s, %d parameters) on %s x %d: %d %s images (%s masks), %d %s "
             "images monitored, batch %d per process, epochs %d..%d%s", settings.experiment,
             settings.architecture, count_parameters(trainer.model), trainer.device, ranks.world,
             len(train_set), train_set.split, settings.masks, len(val_set), val_set.split,
             settings.batch_size, trainer.epoch + 1, settings.epochs,
             f", at most {settings.max_steps} steps" if settings.max_steps else "")
    for warning in trainer.objective.warnings:
        log.warning("%s", warning)

    board = Board(Path(tensorboard_dir) if tensorboard_dir else None, settings,
                  trainer.resumed_step)
    try:
        with stop_on_signals(trainer):
            while trainer.epoch < settings.epochs and (settings.max_steps is None
                                                       or trainer.step < settings.max_steps):
                done = trainer.cut.batches if trainer.cut else 0
                sampler.set_epoch(trainer.epoch + 1, start=done * settings.batch_size)
                trainer.run_epoch(loader, val_loader, val_set.split, board)
                if trainer.stop_signal is not None:  # it came after the epoch's last step
                    raise TrainingInterrupted(
                        f"{settings.experiment}: stopped by "
                        f"{signal.Signals(trainer.stop_signal).name} after epoch "
                        f"{trainer.epoch}; running the job again resumes there")
    finally:
        board.close()

    if not trainer.history:
        raise ValueError("no epochs were trained: set train.epochs (and train.max_steps) to at "
                         "least 1")
    # the objective on the test split, for the seed report's "test metrics" table
    last = trainer.history[-1]
    test_loss = (last["val_loss"] if val_set is test_set else
                 evaluate(trainer.model, DataLoader(test_set, **loader_args), trainer.objective,
                          trainer.device, "test", settings.amp, trainer.dtype)["test_loss"])
    if ranks.main:
        save_torch(_model_file(trainer, manifest, len(train_set), test_loss), model_out)
        write_history(trainer.history, log_csv)
    distributed.barrier()
    return trainer.history


@contextlib.contextmanager
def stop_on_signals(trainer: Trainer) -> Iterator[None]:
    """SIGTERM and SIGUSR1 ask ``trainer`` to stop after its step in flight (the loop writes the
    checkpoint and raises :class:`TrainingInterrupted`); the previous handlers come back after.
    Only the main thread can take signals: elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def ask_to_stop(signum: int, _frame: object) -> None:
        if trainer.stop_signal is None:
            log.warning("%s received: finishing the step in flight, then checkpoint and stop",
                        signal.Signals(signum).name)
        trainer.stop_signal = signum

    previous = {sig: signal.signal(sig, ask_to_stop) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def write_history(history: list[dict[str, Any]], path: str | Path) -> None:
    """The per-epoch log as CSV, atomically (columns: the union over epochs, in order)."""
    columns = list(dict.fromkeys(k for row in history for k in row))
    with atomic_open(path, newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(history)
