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
from it when the rule runs again. It is tied to a fingerprint of the settings that shape training
(architecture and options, batch size, learning rate, loss, seed, masks, manifest contents); the
number of epochs and ``max_steps`` are not part of it, so raising them continues a finished run.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import hashlib
import logging
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from ndmha import distributed, provenance
from ndmha.checkpoints import init_weights, load_torch, save_torch
from ndmha.data.dataset import EpochSampler, InpaintingDataset
from ndmha.errors import ConfigError
from ndmha.io import atomic_open
from ndmha.losses import Objective, PerceptualSettings
from ndmha.metrics import composite, image_metrics
from ndmha.models import build_model, count_parameters
from ndmha.models.layers import AUTO

log = logging.getLogger("ndmha")

METRICS = ("l1", "psnr", "ssim")
#: the columns of the epoch log that measure time: the only ones two equal runs may differ in
TIMING_COLUMNS = ["seconds", "wall_seconds"]
DTYPES = {"float32": torch.float32, "float64": torch.float64}
# Settings that do not change what is learned: a checkpoint made under other values resumes.
NOT_FINGERPRINTED = ("experiment", "epochs", "max_steps", "device", "num_workers",
                     "deform_backend", "nan_patience", "nan_lr_factor", "channels_last",
                     "cudnn_benchmark", "deterministic", "persistent_workers", "compile", "tensorboard",
                     "log_every", "grid_images")


@dataclass
class TrainSettings:
    """Everything that shapes a training run (read from config: the shared ``train`` section,
    overridden by the experiment's own ``train``)."""

    architecture: str
    epochs: int
    experiment: str = ""              # the experiment's name (default: the architecture's)
    options: dict[str, Any] = field(default_factory=dict)  # the architecture's arguments
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
    deform_backend: str = AUTO
    perceptual: dict[str, Any] = field(default_factory=dict)
    channels_last: str = "auto"       # auto: on GPU only; on; off
    cudnn_benchmark: bool = True      # let cuDNN pick the fastest conv algorithms (GPU)
    deterministic: bool = False       # deterministic algorithms where torch has them (GPU)
    persistent_workers: bool = True   # keep DataLoader workers between epochs (num_workers > 0)
    compile: bool = False             # torch.compile the generator's training forward
    lr_scaling: str = "none"          # none | linear | sqrt: lr x (batch / lr_reference_batch)^k
    lr_reference_batch: int = 1       # the batch size ``lr`` was tuned for (the paper: 1)
    dtype: str = "float32"            # float32; float64 for exact comparisons (tests), no AMP
    max_steps: int | None = None      # stop after this many optimizer steps (smoke runs)
    max_train_images: int | None = None  # train on the first N images only (the seed's 750)
    train_splits: list[str] = field(default_factory=lambda: ["train"])  # e.g. [train, val]
    masks: str = "fixed"              # fixed: the manifest's pairs; random: a fresh mask a sample
    warmup_steps: int = 0             # linear learning-rate warm-up over this many steps
    init_from: str = ""               # fine-tune: start from these weights (its sha256 hashed)
    lr_decay: str = "none"            # none | cosine: lr x cosine from 1 to lr_final over lr_decay_steps
    lr_decay_steps: int = 0           # the cosine's length in optimizer steps (then held at lr_final)
    lr_final: float = 0.01            # the factor the cosine ends at
    tensorboard: bool = True          # event files for TensorBoard (rank 0)
    log_every: int = 10               # steps between TensorBoard scalars
    grid_images: int = 6              # fixed monitored images in TensorBoard's prediction grid

    def __post_init__(self) -> None:
        self.experiment = self.experiment or self.architecture
        if self.dtype not in DTYPES:
            raise ConfigError(f"train.dtype: must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        if self.lr_decay == "cosine" and self.lr_decay_steps < 1:
            raise ConfigError("train.lr_decay_steps: lr_decay cosine needs its length in steps "
                              "(at least 1)")
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

    def lr_factor(self, step: int) -> float:
        """The schedule at optimizer step ``step`` (from 0): a linear warm-up over
        ``warmup_steps``, then (``lr_decay: cosine``) a half cosine from 1 down to ``lr_final``
        over ``lr_decay_steps`` steps, held there after. A pure function of the step rather than
        a ``torch.optim.lr_scheduler``: a resume, or a restore that lowers the base rate, then
        needs no scheduler state to stay in step."""
        factor = min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps > 0 else 1.0
        if self.lr_decay == "cosine":
            t = min(1.0, step / self.lr_decay_steps)
            factor *= self.lr_final + (1.0 - self.lr_final) * 0.5 * (1.0 + math.cos(math.pi * t))
        return factor

    def memory_format(self, device: torch.device) -> torch.memory_format:
        on = self.channels_last in ("on", True) or (self.channels_last == "auto"
                                                     and device.type == "cuda")
        return torch.channels_last if on else torch.contiguous_format

    def precision(self, device: torch.device) -> str:
        """The precision ``amp`` resolves to on ``device``: ``bf16`` (autocast) or ``off``."""
        on = self.amp == "bf16" or (self.amp == "auto" and device.type == "cuda"
                                    and self.dtype == "float32")
        return "bf16" if on else "off"

    def fingerprint(self, manifest: Path, device: torch.device | None = None) -> str:
        """Hash of the settings a checkpoint must share to be resumed (``epochs`` excluded), with
        ``amp`` as it resolves on ``device`` (``auto`` is bf16 on a GPU and off on a CPU: a CPU
        checkpoint must not resume under bf16 unnoticed)."""
        shaping = {k: v for k, v in asdict(self).items() if k not in NOT_FINGERPRINTED}
        if device is not None:
            shaping["amp"] = self.precision(device)
        if self.init_from:  # the starting weights by content, not by path
            shaping["init_from"] = provenance.sha256_file(self.init_from)
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
    run; :meth:`TrainSettings.precision` says the same for the fingerprint)."""
    if amp == "bf16" or (amp == "auto" and device.type == "cuda" and dtype == torch.float32):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def forward_stages(model: nn.Module, image: torch.Tensor, mask: torch.Tensor
                   ) -> tuple[torch.Tensor | None, torch.Tensor]:
    """(coarse output or None, final output) of a model, or of its DDP wrapper."""
    net = model.module if isinstance(model, DistributedDataParallel) else model
    if getattr(net, "coarse_to_fine", False):
        return model(image, mask, return_coarse=True)
    return None, model(image, mask)


def _rng_state(device: torch.device) -> dict[str, Any]:
    """The CPU generator's state and, on a GPU, the state of this process's own device only (not
    every visible GPU's): rank 0 writes the checkpoint, so it holds rank 0's states, and a run
    resumed on another number of GPUs gives each rank these same states. No random draw of the
    training depends on a rank's CUDA generator (masks and data order come from the seed, the
    epoch and the index), so sharing it loses nothing."""
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if device.type == "cuda" and isinstance(cuda, torch.Tensor):
        torch.cuda.set_rng_state(cuda, device)


def _to_device(batch: dict[str, Any], device: torch.device,
               memory_format: torch.memory_format = torch.contiguous_format,
               dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, ...]:
    return tuple(batch[k].to(device, dtype, non_blocking=True, memory_format=memory_format)
                 for k in ("image", "mask", "target"))


def _finite(*values: torch.Tensor) -> torch.Tensor:
    """Whether every value is finite: a bool tensor on their device (no host sync)."""
    return torch.stack([torch.isfinite(v).all() for v in values]).all()


class _Means:
    """Running per-image means of the loss, its terms and the composite's metrics, summed on the
    device (float64 on a CPU, float32 metrics on a GPU) and read once, by :meth:`result`.

    Kept rather than ``torchmetrics.aggregation.MeanMetric`` (torchmetrics 1.9): a skipped step
    must add nothing without the host looking at it, i.e. a weight of 0 that is a device tensor.
    MeanMetric's ``nan_strategy="disable"`` discards the weight argument (its
    ``_cast_and_nan_check_input`` replaces it by ones: ``test_meanmetric_disable_ignores_weight``),
    and every other strategy calls ``isnan(x).any()`` in ``update``: a device-to-host sync per
    step on a GPU, which these sums exist to avoid. Under DDP the epoch's sums go in one
    all-reduce (``distributed.all_sum``), not one gather per metric and state.
    """

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.count: torch.Tensor | float = 0.0

    def add(self, n: int, losses: dict[str, torch.Tensor], pred: torch.Tensor,
            image: torch.Tensor, mask: torch.Tensor, target: torch.Tensor,
            ok: torch.Tensor | None = None) -> None:
        """Add one batch of ``n`` images; a step that ``ok`` (a bool tensor) marks as skipped
        adds nothing (its values may be NaN)."""
        dtype = torch.float64 if pred.device.type == "cpu" else torch.float32
        ok = torch.ones((), dtype=torch.bool, device=pred.device) if ok is None else ok
        zero = torch.zeros((), dtype=torch.float64, device=pred.device)
        values = {name: value.detach().to(torch.float64) * n for name, value in losses.items()}
        # clamped as the test metrics' 8-bit images are, so logged and test metrics compare
        metrics = image_metrics(composite(pred.clamp(0, 1), image, mask), target, dtype,
                                to_cpu=False)
        values.update({name: v.sum().to(torch.float64) for name, v in metrics.items()})
        for name, value in values.items():
            self.sums[name] = self.sums.get(name, zero) + torch.where(ok, value, zero)
        self.count = self.count + ok.to(torch.float64) * n

    def totals(self) -> tuple[list[str], list[float]]:
        """The sums' names and values, then the image count last: one host sync."""
        keys = sorted(self.sums)
        count = torch.as_tensor(self.count, dtype=torch.float64)
        values = [*(self.sums[k].cpu() for k in keys), count.cpu()]
        return keys, torch.stack(values).tolist()

    def result(self, prefix: str, totals: tuple[list[str], list[float]] | None = None
               ) -> dict[str, float]:
        keys, values = totals or self.totals()
        *sums, count = values
        return {f"{prefix}_{k}": v / max(count, 1) for k, v in zip(keys, sums)}


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


class _Guard:
    """The non-finite guard's counters, kept on the device: steps skipped, the current run of
    skipped steps in a row and the longest run since the host last looked (:meth:`read`)."""

    def __init__(self, device: torch.device) -> None:
        zero = torch.zeros((), dtype=torch.long, device=device)
        self.pending, self.run, self.longest = zero.clone(), zero.clone(), zero.clone()
        self.skipped = 0  # read so far, on the host

    def add(self, ok: torch.Tensor) -> None:
        bad = (~ok).long()
        self.pending += bad
        self.run = (self.run + 1) * bad
        self.longest = torch.maximum(self.longest, self.run)

    def read(self) -> tuple[int, int, int]:
        """(skipped since the last read, the longest run in it, the run now): one host sync."""
        skipped, longest, now = torch.stack([self.pending, self.longest, self.run]).tolist()
        self.skipped += skipped
        self.pending.zero_()
        self.longest.copy_(self.run)
        return skipped, longest, now

    def reset_run(self) -> None:
        self.run.zero_()
        self.longest.zero_()


class _Board:
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


def _deterministic() -> None:
    """``train.deterministic``: torch's deterministic algorithms (``warn_only``: an op without
    one warns instead of raising, e.g. grid_sample's CUDA backward, which our torch deformable
    conv uses), cuDNN's deterministic convolutions without autotuning, and cuBLAS's fixed
    workspace (set before CUDA starts). What stays non-deterministic: docs/architecture.md,
    "Determinism on a GPU"."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    log.info("deterministic algorithms on (warn_only: ops without one warn)")


class _Trainer:
    """The state of one run: networks, optimizers, history, budget and the non-finite guard."""

    def __init__(self, settings: TrainSettings, manifest: Path, checkpoint: Path) -> None:
        self.settings = settings
        self.checkpoint = checkpoint
        if settings.deterministic:
            _deterministic()
        self.ranks, device = distributed.init(settings.device)
        self.device = device or resolve_device(settings.device)
        self.fingerprint = settings.fingerprint(manifest, self.device)
        torch.manual_seed(settings.seed)
        self.memory_format = settings.memory_format(self.device)
        self.dtype = settings.torch_dtype
        self.model = build_model(settings.architecture, settings.options,
                                 settings.deform_backend,
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
                saved = load_torch(self.checkpoint).get("precision", "not recorded")
                precision = self.settings.precision(self.device)
                log.warning("%s was written with other settings or data (its precision: %s, "
                            "this run's: %s on %s); starting afresh", self.checkpoint, saved,
                            precision, self.device.type)
            return
        self._load_networks(state)
        _set_rng_state(state["rng"], self.device)
        self.history = list(state["history"])
        self.epoch = int(state["epoch"])
        log.info("resuming %s from %s after epoch %d (%d steps)", self.settings.experiment,
                 self.checkpoint, self.epoch, self.step)

    def save(self) -> None:
        """The checkpoint, written by rank 0 while the others wait."""
        if self.ranks.main:
            save_torch({**self._networks(), "epoch": self.epoch, "history": self.history,
                        "rng": _rng_state(self.device), "fingerprint": self.fingerprint,
                        "precision": self.settings.precision(self.device)}, self.checkpoint)
        distributed.barrier()

    def _set_lr(self, step: int) -> float:
        """The rate of this step: the current base rate (lowered by each restore) times the
        schedule's factor (:meth:`TrainSettings.lr_factor`)."""
        lr = self.lr * self.settings.lr_factor(step)
        for optimizer in (self.optimizer, self.d_optimizer):
            for group in (optimizer.param_groups if optimizer is not None else []):
                group["lr"] = lr
        return lr

    def _check(self, guard: "_Guard", step: int) -> int:
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
        ok = distributed.all_true(_finite(loss, norm))      # every rank skips together
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

    def run_epoch(self, loader: DataLoader, val_loader: DataLoader, val_split: str,
                  board: _Board) -> None:
        s = self.settings
        began = time.perf_counter()
        self.model.train()
        self.objective.train()
        means = _Means()
        guard = _Guard(self.device)
        restores = 0
        step, images = self.step, self.history[-1]["images"] if self.history else 0
        for batch in _progress(loader, f"{s.experiment} epoch {self.epoch + 1}/{s.epochs}"):
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
        n = self.settings.grid_images
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
                "train_device": provenance.device_name(self.device),
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


def train(manifest: str | Path, model_out: str | Path, log_csv: str | Path,
          checkpoint: str | Path, settings: TrainSettings,
          tensorboard_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """Train ``settings.experiment`` on the manifest's training images; write the weights (with
    the run's budget and provenance) and the epoch log. Resumes from ``checkpoint`` when it exists
    with the same fingerprint; ``tensorboard_dir`` receives the event files."""
    manifest = Path(manifest)
    trainer = _Trainer(settings, manifest, Path(checkpoint))
    ranks = trainer.ranks
    if not ranks.main:
        log.setLevel(logging.WARNING)  # rank 0 alone writes the log
    trainer.resume()
    train_set, val_set, test_set = _datasets(manifest, settings)
    loader_args = {"batch_size": settings.batch_size, "num_workers": settings.num_workers,
                   "pin_memory": trainer.device.type == "cuda",
                   "persistent_workers": settings.persistent_workers and settings.num_workers > 0}
    val_loader = DataLoader(val_set, shuffle=False, **loader_args)
    # one shard of every epoch's seeded permutation per rank (the whole of it with one process):
    # rank r's batch k holds the images r, r + world, ... of the single-process batch k
    sampler = EpochSampler(train_set, num_replicas=ranks.world, rank=ranks.rank, shuffle=True,
                           seed=settings.seed)
    loader = DataLoader(train_set, sampler=sampler, **loader_args)
    log.info("training %s (%s, %d parameters) on %s x %d: %d %s images (%s masks), %d %s "
             "images monitored, batch %d per process, epochs %d..%d%s", settings.experiment,
             settings.architecture, count_parameters(trainer.model), trainer.device, ranks.world,
             len(train_set), train_set.split, settings.masks, len(val_set), val_set.split,
             settings.batch_size, trainer.epoch + 1, settings.epochs,
             f", at most {settings.max_steps} steps" if settings.max_steps else "")
    for warning in trainer.objective.warnings:
        log.warning("%s", warning)

    board = _Board(Path(tensorboard_dir) if tensorboard_dir else None, settings, trainer.step)
    try:
        while trainer.epoch < settings.epochs and (settings.max_steps is None
                                                   or trainer.step < settings.max_steps):
            sampler.set_epoch(trainer.epoch + 1)
            trainer.run_epoch(loader, val_loader, val_set.split, board)
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
        save_torch({"architecture": settings.architecture, "options": settings.options,
                    "experiment": settings.experiment,
                    "state_dict": trainer.model.state_dict(),
                    "parameters": count_parameters(trainer.model), "epochs": trainer.epoch,
                    "budget": trainer.budget(len(train_set)), "test_loss": test_loss,
                    "warnings": trainer.objective.warnings,
                    "provenance": provenance.collect(trainer.device, asdict(settings),
                                                     manifest)}, model_out)
        write_history(trainer.history, log_csv)
    distributed.barrier()
    return trainer.history


def write_history(history: list[dict[str, Any]], path: str | Path) -> None:
    """The per-epoch log as CSV, atomically (columns: the union over epochs, in order)."""
    columns = list(dict.fromkeys(k for row in history for k in row))
    with atomic_open(path, newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(history)


def load_model(path: str | Path, device: torch.device | str = "cpu",
               deform_backend: str | None = None) -> tuple[dict[str, Any], nn.Module]:
    """What a ``model.pt`` written by :func:`train` says of itself (architecture and options,
    experiment, budget, provenance, warnings) and the trained model in eval mode, its deformable
    convs on ``deform_backend`` (the architecture's default when None)."""
    state = load_torch(path)
    model = build_model(state["architecture"], state.get("options"), deform_backend)
    model.load_state_dict(state.pop("state_dict"))
    return state, model.to(device).eval()
