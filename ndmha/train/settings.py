"""The settings of one training run (config's ``train`` section with the experiment's own): the
dataclass, its learning-rate schedule, precision and fingerprint; the device and autocast they
resolve to."""

from __future__ import annotations

import contextlib
import hashlib
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ndmha.hashing import sha256_file
from ndmha.errors import ConfigError

DTYPES = {"float32": torch.float32, "float64": torch.float64}
# Settings that do not change what is learned: a checkpoint made under other values resumes.
NOT_FINGERPRINTED = ("experiment", "epochs", "max_steps", "device", "num_workers",
                     "nan_patience", "nan_lr_factor", "channels_last",
                     "cudnn_benchmark", "deterministic", "persistent_workers", "compile", "tensorboard",
                     "log_every", "board_images", "checkpoint_minutes")


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
    log_every: int = 5                # steps between TensorBoard scalars (config.yaml's)
    board_images: int = 6             # monitored images in TensorBoard's image grid (fixed)
    checkpoint_minutes: float = 0.0   # also checkpoint mid-epoch at most this often (0: off)

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
            shaping["init_from"] = sha256_file(self.init_from)
        digest = hashlib.sha256(repr(sorted(shaping.items())).encode())
        digest.update(Path(manifest).read_bytes())
        return digest.hexdigest()


def autocast(device: torch.device, amp: str, dtype: torch.dtype = torch.float32
             ) -> contextlib.AbstractContextManager:
    """bf16 autocast when ``amp`` asks for it (``auto``: on GPU only, and never for a float64
    run; :meth:`TrainSettings.precision` says the same for the fingerprint)."""
    if amp == "bf16" or (amp == "auto" and device.type == "cuda" and dtype == torch.float32):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
