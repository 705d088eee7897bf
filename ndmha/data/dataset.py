"""PyTorch dataset over a split manifest: (corrupted image, hole mask, ground truth) in [0, 1]."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from ndmha.data.split import read_manifest
from ndmha.io import read_image


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 BGR (H, W, 3) or grayscale (H, W) -> float RGB (3, H, W) / (1, H, W) in [0, 1]."""
    if image.ndim == 2:
        image = image[..., None]
    else:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(255.0)


def to_image(tensor: torch.Tensor) -> np.ndarray:
    """float RGB (3, H, W) in [0, 1] -> uint8 BGR (H, W, 3), rounded."""
    array = tensor.detach().float().clamp(0, 1).mul(255).round().byte().cpu().numpy()
    return cv2.cvtColor(array.transpose(1, 2, 0), cv2.COLOR_RGB2BGR)


class InpaintingDataset(Dataset):
    """Items of one split of a manifest: ``id``, ``image`` (corrupted), ``mask`` (1 = hole), ``target``."""

    def __init__(self, manifest: str | Path, split: str) -> None:
        self.frame = read_manifest(manifest, split)
        self.split = split

    def __len__(self) -> int:
        return len(self.frame)

    def __getitem__(self, index: int) -> dict[str, object]:
        row = self.frame.iloc[index]
        mask = (to_tensor(read_image(row["mask"], cv2.IMREAD_GRAYSCALE)) > 0.5).float()
        return {
            "id": row["id"],
            "image": to_tensor(read_image(row["corrupted"])),
            "mask": mask,
            "target": to_tensor(read_image(row["image"])),
        }
