"""PyTorch dataset over a split manifest: (corrupted image, hole mask, ground truth) in [0, 1].

Masks are either the manifest's fixed pairing (image i always with mask i, as the corrupted images
were written: the seed report's protocol) or drawn afresh for every sample of every epoch from the
masks of the same rows, with random flips, quarter turns and dilation, as inpainting codebases
(LaMa, EdgeConnect, RFR) train. The draw depends on (seed, epoch, index) only, so a run is
reproducible, resumable, and the same under any number of processes or data-loader workers.
"""

from __future__ import annotations

import itertools

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler

from ndmha.data.masks import is_hole
from ndmha.data.prepare import overlay
from ndmha.data.split import read_manifest
from ndmha.errors import ConfigError
from ndmha.io import read_image

MASK_SAMPLING = ("fixed", "random")
DILATE = np.ones((3, 3), np.uint8)


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 BGR (H, W, 3) or grayscale (H, W) -> float RGB (3, H, W) / (1, H, W) in [0, 1]."""
    if image.ndim == 2:
        image = image[..., None]
    else:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(255.0)


def mask_tensor(mask: np.ndarray) -> torch.Tensor:
    """Grayscale uint8 mask (255 = hole) -> the networks' hole mask: float (1, H, W), 1 = hole
    (:func:`ndmha.data.prepare.is_hole`)."""
    return torch.from_numpy(is_hole(mask)[None]).float()


def to_image(tensor: torch.Tensor) -> np.ndarray:
    """float RGB (3, H, W) in [0, 1] -> uint8 BGR (H, W, 3), rounded."""
    array = tensor.detach().float().clamp(0, 1).mul(255).round().byte().cpu().numpy()
    return cv2.cvtColor(array.transpose(1, 2, 0), cv2.COLOR_RGB2BGR)


def augment_mask(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A hole mask (uint8, 255 = hole) flipped left-right and up-down with probability 1/2 each,
    turned by 0, 90, 180 or 270 degrees (square masks) and dilated 0, 1 or 2 times (3x3)."""
    if rng.random() < 0.5:
        mask = mask[:, ::-1]
    if rng.random() < 0.5:
        mask = mask[::-1]
    if mask.shape[0] == mask.shape[1]:
        mask = np.rot90(mask, int(rng.integers(4)))
    mask = np.ascontiguousarray(mask)
    iterations = int(rng.integers(3))
    return cv2.dilate(mask, DILATE, iterations=iterations) if iterations else mask


class InpaintingDataset(Dataset):
    """Items of one or more splits of a manifest: ``id``, ``image`` (corrupted), ``mask``
    (1 = hole), ``target``.

    ``max_images`` keeps the first rows (by id). ``masks="random"`` draws each item's mask from
    these rows' masks (see the module's docstring); the index may then carry the epoch,
    ``epoch * len(self) + i`` (:class:`EpochSampler`).
    """

    def __init__(self, manifest: str | Path, split: str | Sequence[str], masks: str = "fixed",
                 seed: int = 0, max_images: int | None = None) -> None:
        if masks not in MASK_SAMPLING:
            raise ConfigError(f"train.masks: must be one of {list(MASK_SAMPLING)}, got {masks!r}")
        splits = [split] if isinstance(split, str) else list(split)
        frame = read_manifest(manifest)
        self.frame = frame[frame["split"].isin(splits)].reset_index(drop=True)
        if max_images is not None:
            self.frame = self.frame.head(max_images)
        self.split = "+".join(splits)
        self.masks, self.seed = masks, seed

    def __len__(self) -> int:
        return len(self.frame)

    def __getitem__(self, index: int) -> dict[str, object]:
        epoch, index = divmod(index, len(self.frame))
        row = self.frame.iloc[index]
        if self.masks == "fixed":
            mask, corrupted = read_image(row["mask"], cv2.IMREAD_GRAYSCALE), read_image(
                row["corrupted"])
            target = read_image(row["image"])
        else:
            rng = np.random.default_rng([self.seed, epoch, index])
            pool = self.frame["mask"]
            mask = augment_mask(read_image(pool.iloc[int(rng.integers(len(pool)))],
                                           cv2.IMREAD_GRAYSCALE), rng)
            target = read_image(row["image"])
            corrupted = overlay(target, mask)
        return {
            "id": row["id"],
            "image": to_tensor(corrupted),
            "mask": mask_tensor(mask),
            "target": to_tensor(target),
        }


class EpochSampler(DistributedSampler):
    """A DistributedSampler whose indices carry the epoch (``epoch * len(dataset) + i``), so that
    the dataset draws each epoch's masks afresh in whichever worker process reads the item.
    ``start`` skips that many of this rank's indices of the epoch (a run resumed mid-epoch picks
    up at the next batch, the epoch's order unchanged); :meth:`set_epoch` resets it."""

    start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        super().set_epoch(epoch)
        self.start = start

    def __iter__(self):
        n = len(self.dataset)
        return itertools.islice((self.epoch * n + i for i in super().__iter__()), self.start,
                                None)

    def __len__(self) -> int:
        return max(0, super().__len__() - self.start)
