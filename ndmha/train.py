"""One training loop for every model: seeded, logged per epoch, checkpointed and resumable.

Per epoch the log holds the objective (``loss``, on the raw prediction) and L1, PSNR and SSIM of the
composite (prediction in the holes, input elsewhere) for the training and validation images. When
the split has no validation images (the paper's 27k / 3k scheme), the test split is monitored
instead and ``val_split`` says so; nothing is selected on it (the last epoch's weights are kept).

The checkpoint (model, optimizer, completed epoch, history, RNG states) is written atomically after
every epoch outside Snakemake's outputs, so a killed or failed job resumes from it when the rule runs
again. It is tied to a fingerprint of the settings that shape training (model, batch size, learning
rate, loss, seed, manifest contents); the number of epochs is not part of it, so raising
``epochs`` continues a finished run.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import sys
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from ndmha.data.dataset import InpaintingDataset
from ndmha.io import atomic_open, atomic_path
from ndmha.losses import WeightedLoss
from ndmha.metrics import composite, image_metrics
from ndmha.models import build_model, count_parameters

log = logging.getLogger("ndmha")

METRICS = ("loss", "l1", "psnr", "ssim")


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

    def fingerprint(self, manifest: Path) -> str:
        """Hash of the settings a checkpoint must share to be resumed (``epochs`` excluded)."""
        shaping = {k: v for k, v in asdict(self).items() if k not in ("epochs", "device",
                                                                     "num_workers")}
        digest = hashlib.sha256(repr(sorted(shaping.items())).encode())
        digest.update(Path(manifest).read_bytes())
        return digest.hexdigest()


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when present, else cpu; otherwise the named device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def save_torch(obj: Any, path: str | Path) -> None:
    """``torch.save`` through a temporary file and an atomic rename."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_torch(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint or model file safely (tensors and plain containers only)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_device(batch: dict[str, Any], device: torch.device) -> tuple[torch.Tensor, ...]:
    return tuple(batch[k].to(device, non_blocking=True) for k in ("image", "mask", "target"))


class _Means:
    """Running per-image means of named values."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = defaultdict(float)
        self.count = 0

    def add(self, n: int, loss: torch.Tensor, pred: torch.Tensor, image: torch.Tensor,
            mask: torch.Tensor, target: torch.Tensor) -> None:
        self.sums["loss"] += float(loss) * n
        for name, values in image_metrics(composite(pred, image, mask), target).items():
            self.sums[name] += float(values.sum())
        self.count += n

    def result(self, prefix: str) -> dict[str, float]:
        return {f"{prefix}_{k}": self.sums[k] / max(self.count, 1) for k in METRICS}


def _progress(loader: Iterable, desc: str) -> Iterable:
    return tqdm(loader, desc=desc, mininterval=5.0, unit="batch", file=sys.stderr, leave=False)


@torch.inference_mode()
def evaluate(model: nn.Module, loader: DataLoader, criterion: WeightedLoss,
             device: torch.device, prefix: str) -> dict[str, float]:
    """Mean objective and composite metrics of ``model`` over ``loader`` in eval mode."""
    model.eval()
    means = _Means()
    for batch in _progress(loader, prefix):
        image, mask, target = _to_device(batch, device)
        pred = model(image, mask)
        loss, _ = criterion(pred, target, mask)
        means.add(len(image), loss, pred, image, mask, target)
    return means.result(prefix)


def train(manifest: str | Path, model_out: str | Path, log_csv: str | Path,
          checkpoint: str | Path, settings: TrainSettings) -> list[dict[str, Any]]:
    """Train ``settings.model`` on the manifest's train split; write the weights and the epoch log.

    Resumes from ``checkpoint`` when it exists with the same fingerprint.
    """
    manifest, checkpoint = Path(manifest), Path(checkpoint)
    device = resolve_device(settings.device)
    fingerprint = settings.fingerprint(manifest)
    torch.manual_seed(settings.seed)
    model = build_model(settings.model).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr, betas=tuple(settings.betas))
    criterion = WeightedLoss(settings.loss, key=f"loss.{settings.model}")

    history: list[dict[str, Any]] = []
    start = 1
    if checkpoint.exists():
        state = load_torch(checkpoint)
        if state.get("fingerprint") == fingerprint:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            _set_rng_state(state["rng"])
            history = list(state["history"])
            start = int(state["epoch"]) + 1
            log.info("resuming %s from %s after epoch %d", settings.model, checkpoint, start - 1)
        else:
            log.warning("%s was written with other settings or data; starting afresh", checkpoint)

    train_set = InpaintingDataset(manifest, "train")
    val_set = InpaintingDataset(manifest, "val")
    if len(val_set) == 0:
        val_set = InpaintingDataset(manifest, "test")
    if len(train_set) == 0:
        raise ValueError(f"{manifest}: the train split is empty")
    loader_args = {"batch_size": settings.batch_size, "num_workers": settings.num_workers,
                   "pin_memory": device.type == "cuda"}
    val_loader = DataLoader(val_set, shuffle=False, **loader_args)
    log.info("training %s (%d parameters) on %s: %d train, %d %s images, epochs %d..%d",
             settings.model, count_parameters(model), device, len(train_set), len(val_set),
             val_set.split, start, settings.epochs)

    for epoch in range(start, settings.epochs + 1):
        began = time.perf_counter()
        order = torch.Generator().manual_seed(settings.seed * 100_003 + epoch)
        loader = DataLoader(train_set, shuffle=True, generator=order, **loader_args)
        model.train()
        means = _Means()
        for batch in _progress(loader, f"{settings.model} epoch {epoch}/{settings.epochs}"):
            image, mask, target = _to_device(batch, device)
            pred = model(image, mask)
            loss, _ = criterion(pred, target, mask)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            means.add(len(image), loss.detach(), pred.detach(), image, mask, target)
        row = {"epoch": epoch, **means.result("train"),
               **evaluate(model, val_loader, criterion, device, "val"),
               "val_split": val_set.split, "seconds": round(time.perf_counter() - began, 3)}
        history.append(row)
        log.info("epoch %d/%d: %s", epoch, settings.epochs,
                 " ".join(f"{k}={v:.4f}" for k, v in row.items() if isinstance(v, float)))
        save_torch({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "epoch": epoch, "history": history, "rng": _rng_state(),
                    "fingerprint": fingerprint}, checkpoint)

    save_torch({"model": settings.model, "state_dict": model.state_dict(),
                "parameters": count_parameters(model), "epochs": settings.epochs}, model_out)
    write_history(history, log_csv)
    return history


def write_history(history: list[dict[str, Any]], path: str | Path) -> None:
    """The per-epoch log as CSV, atomically."""
    if not history:
        raise ValueError("no epochs were trained: set train.epochs to at least 1")
    with atomic_open(path, newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)


def load_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[str, nn.Module]:
    """Registry name and trained model (eval mode) from a ``model.pt`` written by :func:`train`."""
    state = load_torch(path)
    model = build_model(state["model"])
    model.load_state_dict(state["state_dict"])
    return state["model"], model.to(device).eval()
