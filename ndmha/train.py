"""One training loop for every model: seeded, logged per epoch, checkpointed and resumable.

Per epoch the log holds the objective (``loss``, on the raw prediction) and each of its terms, the
discriminator's loss when there is one, and L1, PSNR and SSIM of the composite (prediction in the
holes, input elsewhere) for the training and validation images. When the split has no validation
images (the paper's 27k / 3k scheme), the test split is monitored instead and ``val_split`` says
so; nothing is selected on it (the last epoch's weights are kept).

With an adversarial term the generator and the discriminator alternate on every batch: one
discriminator step on the detached output, then one generator step. Gradients are clipped, AMP
(bf16) is used on GPU when enabled, and a guard skips any step whose loss or gradients are not
finite; after ``nan_patience`` such steps in a row it restores the last good checkpoint and
multiplies the learning rates by ``nan_lr_factor``. The log counts both.

The checkpoint (generator, discriminator, optimizers, completed epoch, history, RNG states) is
written atomically after every epoch outside Snakemake's outputs, so a killed or failed job resumes
from it when the rule runs again. It is tied to a fingerprint of the settings that shape training
(model, batch size, learning rate, loss, seed, manifest contents); the number of epochs is not part
of it, so raising ``epochs`` continues a finished run.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import hashlib
import io
import logging
import math
import sys
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from ndmha import distributed
from ndmha.data.dataset import InpaintingDataset
from ndmha.errors import ConfigError
from ndmha.io import atomic_open, write_bytes
from ndmha.losses import Objective, PerceptualSettings
from ndmha.metrics import composite, image_metrics
from ndmha.models import build_model, count_parameters
from ndmha.models.layers import set_deform_backend

log = logging.getLogger("ndmha")

METRICS = ("l1", "psnr", "ssim")
DTYPES = {"float32": torch.float32, "float64": torch.float64}
# Settings that do not change what is learned: a checkpoint made under other values resumes.
NOT_FINGERPRINTED = ("epochs", "device", "num_workers", "deform_backend", "nan_patience",
                     "nan_lr_factor", "channels_last", "cudnn_benchmark", "persistent_workers",
                     "compile")


@dataclass
class TrainSettings:
    """Everything that shapes a training run (read from config)."""

    model: str
    epochs: int
    batch_size: int = 8
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.99)
    loss: dict[str, float] = field(default_factory=lambda: {"l1": 1.0})
    seed: int = 0
    device: str = "auto"
    num_workers: int = 0
    amp: str = "auto"                 # auto: bf16 on GPU, off on CPU; off; bf16
    grad_clip: float = 1.0            # max gradient norm; 0 turns clipping off
    nan_patience: int = 3             # non-finite steps in a row before restoring
    nan_lr_factor: float = 0.5        # learning-rate factor applied at each restore
    deform_backend: str = "torchvision"
    perceptual: dict[str, Any] = field(default_factory=dict)
    channels_last: str = "auto"       # auto: on GPU only; on; off
    cudnn_benchmark: bool = True      # let cuDNN pick the fastest conv algorithms (GPU)
    persistent_workers: bool = True   # keep DataLoader workers between epochs (num_workers > 0)
    compile: bool = False             # torch.compile the generator's training forward
    lr_scaling: str = "none"          # none | linear | sqrt: lr x (batch / lr_reference_batch)^k
    lr_reference_batch: int = 1       # the batch size ``lr`` was tuned for (the paper: 1)
    dtype: str = "float32"            # float32; float64 for exact comparisons (tests), no AMP

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ConfigError(f"train.dtype: must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        if self.dtype == "float64" and self.amp == "bf16":
            raise ConfigError("train.dtype: float64 cannot run under train.amp bf16 "
                              "(set train.amp: off)")

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def effective_lr(self) -> float:
        """``lr`` scaled for the batch size (the linear or square-root rule), or as given."""
        ratio = self.batch_size / self.lr_reference_batch
        return self.lr * {"none": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}[self.lr_scaling]

    def memory_format(self, device: torch.device) -> torch.memory_format:
        on = self.channels_last in ("on", True) or (self.channels_last == "auto"
                                                     and device.type == "cuda")
        return torch.channels_last if on else torch.contiguous_format

    def fingerprint(self, manifest: Path) -> str:
        """Hash of the settings a checkpoint must share to be resumed (``epochs`` excluded)."""
        shaping = {k: v for k, v in asdict(self).items() if k not in NOT_FINGERPRINTED}
        digest = hashlib.sha256(repr(sorted(shaping.items())).encode())
        digest.update(Path(manifest).read_bytes())
        return digest.hexdigest()


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when present, else cpu; otherwise the named device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def autocast(device: torch.device, amp: str, dtype: torch.dtype = torch.float32
             ) -> contextlib.AbstractContextManager:
    """bf16 autocast when ``amp`` asks for it (``auto``: on GPU only, and never for a float64
    run)."""
    if amp == "bf16" or (amp == "auto" and device.type == "cuda" and dtype == torch.float32):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def save_torch(obj: Any, path: str | Path) -> None:
    """``torch.save`` to memory, then written atomically (a full disk is then an ``OSError`` that
    names the file, where torch's own writer raises an opaque RuntimeError)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes(path, buffer.getbuffer())


def load_torch(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint or model file safely (tensors and plain containers only)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def forward_stages(model: nn.Module, image: torch.Tensor, mask: torch.Tensor
                   ) -> tuple[torch.Tensor | None, torch.Tensor]:
    """(coarse output or None, final output) of a model, or of its DDP wrapper."""
    net = model.module if isinstance(model, DistributedDataParallel) else model
    if getattr(net, "coarse_to_fine", False):
        return model(image, mask, return_coarse=True)
    return None, model(image, mask)


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_device(batch: dict[str, Any], device: torch.device,
               memory_format: torch.memory_format = torch.contiguous_format,
               dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, ...]:
    return tuple(batch[k].to(device, dtype, non_blocking=True, memory_format=memory_format)
                 for k in ("image", "mask", "target"))


def _finite(*values: torch.Tensor) -> bool:
    return all(bool(torch.isfinite(v).all()) for v in values)


class _Means:
    """Running per-image means of the loss, its terms and the composite's metrics."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = defaultdict(float)
        self.count = 0

    def add(self, n: int, losses: dict[str, torch.Tensor], pred: torch.Tensor,
            image: torch.Tensor, mask: torch.Tensor, target: torch.Tensor) -> None:
        for name, value in losses.items():
            self.sums[name] += float(value) * n
        for name, values in image_metrics(composite(pred, image, mask), target).items():
            self.sums[name] += float(values.sum())
        self.count += n

    def result(self, prefix: str) -> dict[str, float]:
        return {f"{prefix}_{k}": v / max(self.count, 1) for k, v in self.sums.items()}


def _progress(loader: Iterable, desc: str) -> Iterable:
    return tqdm(loader, desc=desc, mininterval=5.0, unit="batch", file=sys.stderr, leave=False,
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
    means = _Means()
    for batch in _progress(loader, prefix):
        image, mask, target = _to_device(batch, device, dtype=dtype)
        with autocast(device, amp, dtype):
            coarse, pred = forward_stages(model, image, mask)
            total, parts = objective(pred, target, mask, image, coarse)
        means.add(len(image), _loss_parts(total, parts), pred.float(), image, mask, target)
    return means.result(prefix)


class _Trainer:
    """The state of one run: networks, optimizers, history and the non-finite guard."""

    def __init__(self, settings: TrainSettings, manifest: Path, checkpoint: Path) -> None:
        self.settings = settings
        self.checkpoint = checkpoint
        self.ranks, device = distributed.init(settings.device)
        self.device = device or resolve_device(settings.device)
        self.fingerprint = settings.fingerprint(manifest)
        set_deform_backend(settings.deform_backend)
        torch.manual_seed(settings.seed)
        self.memory_format = settings.memory_format(self.device)
        self.dtype = settings.torch_dtype
        self.model = build_model(settings.model).to(self.device, self.dtype,
                                                    memory_format=self.memory_format)
        # the networks that train through DistributedDataParallel when there are several ranks
        self.train_model = self._ddp(self.model)

        def stages(image: torch.Tensor, mask: torch.Tensor
                   ) -> tuple[torch.Tensor | None, torch.Tensor]:
            return forward_stages(self.train_model, image, mask)

        self.stages = torch.compile(stages) if settings.compile else stages
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = settings.cudnn_benchmark
        self.objective = Objective(settings.loss, key=f"loss.{settings.model}",
                                   perceptual=PerceptualSettings(**settings.perceptual)
                                   ).to(self.device, self.dtype)
        betas = tuple(settings.betas)
        lr = settings.effective_lr()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=lr, betas=betas)
        self.d_optimizer = (torch.optim.Adam(self.objective.discriminator.parameters(),
                                             lr=lr, betas=betas)
                            if self.objective.discriminator is not None else None)
        self.train_discriminator = (self._ddp(self.objective.discriminator)
                                    if self.objective.discriminator is not None else None)
        self.history: list[dict[str, Any]] = []
        self.epoch = 0
        self.bad_in_a_row = 0
        self.initial = copy.deepcopy(self._networks())

    def _ddp(self, module: nn.Module) -> nn.Module:
        if not self.ranks.distributed:
            return module
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids)

    def _networks(self) -> dict[str, Any]:
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}
        if self.d_optimizer is not None:
            state["discriminator"] = self.objective.discriminator.state_dict()
            state["d_optimizer"] = self.d_optimizer.state_dict()
        return state

    def _load_networks(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.d_optimizer is not None:
            self.objective.discriminator.load_state_dict(state["discriminator"])
            self.d_optimizer.load_state_dict(state["d_optimizer"])

    def _saved_state(self) -> dict[str, Any] | None:
        """The checkpoint on disk if it belongs to this run's settings."""
        if not self.checkpoint.exists():
            return None
        state = load_torch(self.checkpoint)
        return state if state.get("fingerprint") == self.fingerprint else None

    def resume(self) -> None:
        state = self._saved_state()
        if state is None:
            if self.checkpoint.exists():
                log.warning("%s was written with other settings or data; starting afresh",
                            self.checkpoint)
            return
        self._load_networks(state)
        _set_rng_state(state["rng"])
        self.history = list(state["history"])
        self.epoch = int(state["epoch"])
        log.info("resuming %s from %s after epoch %d", self.settings.model, self.checkpoint,
                 self.epoch)

    def save(self) -> None:
        """The checkpoint, written by rank 0 while the others wait."""
        if self.ranks.main:
            save_torch({**self._networks(), "epoch": self.epoch, "history": self.history,
                        "rng": _rng_state(), "fingerprint": self.fingerprint}, self.checkpoint)
        distributed.barrier()

    def _lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def _restore_last_good(self) -> None:
        """After too many non-finite steps: back to the last checkpoint, lower learning rate."""
        lr = self._lr() * self.settings.nan_lr_factor
        state = self._saved_state()
        self._load_networks(state if state is not None else self.initial)
        for optimizer in (self.optimizer, self.d_optimizer):
            for group in (optimizer.param_groups if optimizer is not None else []):
                group["lr"] = lr
        log.warning("%d non-finite steps in a row: restored %s, learning rate now %.3g",
                    self.bad_in_a_row, "the last checkpoint" if state is not None
                    else "the initial weights", lr)
        self.bad_in_a_row = 0

    def _step(self, optimizer: torch.optim.Optimizer, loss: torch.Tensor,
              params: Iterator[nn.Parameter]) -> bool:
        """Backward, clip, step; skipped (returns False) when loss or gradients are not finite."""
        optimizer.zero_grad(set_to_none=True)
        if not distributed.all_true(_finite(loss), self.device):  # every rank skips together
            return False
        loss.backward()
        params = [p for p in params if p.grad is not None]
        clip = self.settings.grad_clip if self.settings.grad_clip > 0 else math.inf
        norm = torch.nn.utils.clip_grad_norm_(params, clip)
        if not _finite(norm):
            optimizer.zero_grad(set_to_none=True)
            return False
        optimizer.step()
        return True

    def train_batch(self, image: torch.Tensor, mask: torch.Tensor, target: torch.Tensor
                    ) -> tuple[dict[str, torch.Tensor], torch.Tensor, bool]:
        """One generator (and discriminator) update; returns losses, prediction, success."""
        with autocast(self.device, self.settings.amp, self.dtype):
            coarse, pred = self.stages(image, mask)
        losses: dict[str, torch.Tensor] = {}
        ok = True
        discriminator = self.objective.discriminator
        if discriminator is not None:
            # (requires_grad stays on: toggling it would drop DDP's gradient hooks; the grads the
            # generator step leaves in the discriminator are zeroed before its next step)
            with autocast(self.device, self.settings.amp, self.dtype):
                d_loss = self.objective.discriminator_loss(pred, target, mask, image,
                                                           self.train_discriminator)
            ok = self._step(self.d_optimizer, d_loss, discriminator.parameters())
            losses["d_loss"] = d_loss.detach()
        with autocast(self.device, self.settings.amp, self.dtype):
            total, parts = self.objective(pred, target, mask, image, coarse)
        ok = self._step(self.optimizer, total, self.model.parameters()) and ok
        return {**_loss_parts(total, parts), **losses}, pred.detach().float(), ok

    def run_epoch(self, loader: DataLoader, val_loader: DataLoader, val_split: str) -> None:
        s = self.settings
        began = time.perf_counter()
        self.model.train()
        self.objective.train()
        means = _Means()
        skipped = restores = 0
        for batch in _progress(loader, f"{s.model} epoch {self.epoch + 1}/{s.epochs}"):
            image, mask, target = _to_device(batch, self.device, self.memory_format, self.dtype)
            losses, pred, ok = self.train_batch(image, mask, target)
            if ok:
                self.bad_in_a_row = 0
                means.add(len(image), losses, pred, image, mask, target)
                continue
            skipped += 1
            self.bad_in_a_row += 1
            log.warning("non-finite loss or gradients at epoch %d: step skipped (%d in a row)",
                        self.epoch + 1, self.bad_in_a_row)
            if self.bad_in_a_row >= s.nan_patience:
                self._restore_last_good()
                restores += 1
        self.epoch += 1
        keys = sorted(means.sums)  # the same on every rank: steps are skipped by all or none
        *sums, means.count = distributed.all_sum([means.sums[k] for k in keys] + [means.count],
                                                 self.device)
        means.sums.update(zip(keys, sums))
        row = {"epoch": self.epoch, **means.result("train"),
               **evaluate(self.model, val_loader, self.objective, self.device, "val", s.amp,
                          self.dtype),
               "val_split": val_split, "skipped_steps": skipped, "restores": restores,
               "lr": self._lr(), "seconds": round(time.perf_counter() - began, 3)}
        self.history.append(row)
        log.info("epoch %d/%d: %s", self.epoch, s.epochs,
                 " ".join(f"{k}={v:.4g}" for k, v in row.items() if isinstance(v, float)))
        self.save()


def train(manifest: str | Path, model_out: str | Path, log_csv: str | Path,
          checkpoint: str | Path, settings: TrainSettings) -> list[dict[str, Any]]:
    """Train ``settings.model`` on the manifest's train split; write the weights and the epoch log.

    Resumes from ``checkpoint`` when it exists with the same fingerprint.
    """
    manifest = Path(manifest)
    trainer = _Trainer(settings, manifest, Path(checkpoint))
    ranks = trainer.ranks
    if not ranks.main:
        log.setLevel(logging.WARNING)  # rank 0 alone writes the log
    trainer.resume()
    train_set = InpaintingDataset(manifest, "train")
    val_set = InpaintingDataset(manifest, "val")
    if len(val_set) == 0:
        val_set = InpaintingDataset(manifest, "test")
    if len(train_set) == 0:
        raise ValueError(f"{manifest}: the train split is empty")
    loader_args = {"batch_size": settings.batch_size, "num_workers": settings.num_workers,
                   "pin_memory": trainer.device.type == "cuda",
                   "persistent_workers": settings.persistent_workers and settings.num_workers > 0}
    val_loader = DataLoader(val_set, shuffle=False, **loader_args)
    # one shard of every epoch's seeded permutation per rank (the whole of it with one process):
    # rank r's batch k holds the images r, r + world, ... of the single-process batch k
    sampler = DistributedSampler(train_set, num_replicas=ranks.world, rank=ranks.rank,
                                 shuffle=True, seed=settings.seed)
    loader = DataLoader(train_set, sampler=sampler, **loader_args)
    log.info("training %s (%d parameters) on %s x %d: %d train, %d %s images, batch %d per "
             "process, epochs %d..%d", settings.model, count_parameters(trainer.model),
             trainer.device, ranks.world, len(train_set), len(val_set), val_set.split,
             settings.batch_size, trainer.epoch + 1, settings.epochs)
    for warning in trainer.objective.warnings:
        log.warning("%s", warning)

    while trainer.epoch < settings.epochs:
        sampler.set_epoch(trainer.epoch + 1)
        trainer.run_epoch(loader, val_loader, val_set.split)

    if ranks.main:
        save_torch({"model": settings.model, "state_dict": trainer.model.state_dict(),
                    "parameters": count_parameters(trainer.model), "epochs": settings.epochs,
                    "warnings": trainer.objective.warnings}, model_out)
        write_history(trainer.history, log_csv)
    distributed.barrier()
    return trainer.history


def write_history(history: list[dict[str, Any]], path: str | Path) -> None:
    """The per-epoch log as CSV, atomically (columns: the union over epochs, in order)."""
    if not history:
        raise ValueError("no epochs were trained: set train.epochs to at least 1")
    columns = list(dict.fromkeys(k for row in history for k in row))
    with atomic_open(path, newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(history)


def load_model(path: str | Path, device: torch.device | str = "cpu"
               ) -> tuple[dict[str, Any], nn.Module]:
    """What a ``model.pt`` written by :func:`train` says of itself (registry name, parameters,
    epochs, warnings) and the trained model in eval mode."""
    state = load_torch(path)
    model = build_model(state["model"])
    model.load_state_dict(state.pop("state_dict"))
    return state, model.to(device).eval()
