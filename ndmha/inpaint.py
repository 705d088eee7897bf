"""Inpaint a user's own image of any size with a trained model (``ndmha inpaint``).

Default: the image is padded by reflection to a multiple of the model's stride (16 for the
baseline, 8 for NDMHA), inpainted at its own resolution and cropped back. ``size``: the image is
resized to ``size`` x ``size`` for the network (use the training size when the image is much larger
than the faces the model saw, e.g. a 1024 px CelebA-HQ face and a 256 px model) and the prediction
is resized back with bicubic interpolation. Either way the known pixels are kept exactly: only the
holes take the prediction.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import torch

from ndmha.data.dataset import mask_tensor, to_image, to_tensor
from ndmha.classical import composite
from ndmha.data.masks import to_holes
from ndmha.data.prepare import overlay
from ndmha.errors import DataError
from ndmha.io import read_image, write_image
from ndmha.model_files import load_model
from ndmha.devices import resolve_device

log = logging.getLogger("ndmha")


def hole_mask(mask: np.ndarray, shape: tuple[int, int], mask_hole: str = "white") -> np.ndarray:
    """A grayscale mask as our convention (uint8, 255 = hole), nearest-resized to ``shape``
    (any aspect ratio: no crop, unlike the workflow's square masks)."""
    binary = to_holes(mask, mask_hole)
    if binary.shape != shape:
        binary = cv2.resize(binary, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
    return binary


@torch.inference_mode()
def _predict(model: torch.nn.Module, corrupted: np.ndarray, mask: np.ndarray,
             device: torch.device) -> np.ndarray:
    image = to_tensor(corrupted)[None].to(device)
    holes = mask_tensor(mask)[None].to(device)
    return to_image(model(image, holes)[0])


def inpaint_image(model: torch.nn.Module, image: np.ndarray, mask: np.ndarray,
                  size: int | None = None, device: torch.device | str = "cpu") -> np.ndarray:
    """Inpaint ``image`` (BGR uint8, any size) where ``mask`` (uint8, 255 = hole) is set."""
    device = torch.device(device)
    h, w = mask.shape
    corrupted = overlay(image, mask)
    if size:
        small = cv2.resize(corrupted, (size, size), interpolation=cv2.INTER_AREA)
        small_mask = cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST)
        small = overlay(small, small_mask)
        pred = cv2.resize(_predict(model, small, small_mask, device), (w, h),
                          interpolation=cv2.INTER_CUBIC)
    else:
        step = getattr(model, "size_multiple", 16)
        ph, pw = (-h) % step, (-w) % step
        padded = cv2.copyMakeBorder(corrupted, 0, ph, 0, pw, cv2.BORDER_REFLECT_101)
        padded_mask = cv2.copyMakeBorder(mask, 0, ph, 0, pw, cv2.BORDER_REFLECT_101)
        pred = _predict(model, overlay(padded, padded_mask), padded_mask, device)[:h, :w]
    return composite(pred, image, mask)


def inpaint_file(checkpoint: str | Path, image: str | Path, mask: str | Path, out: str | Path,
                 mask_hole: str = "white", size: int | None = None, device: str = "auto") -> Path:
    """Read ``image`` and ``mask``, inpaint, write ``out`` (format from its extension)."""
    dev = resolve_device(device)
    meta, model = load_model(checkpoint, dev)
    picture = read_image(image)
    holes = hole_mask(read_image(mask, cv2.IMREAD_GRAYSCALE), picture.shape[:2], mask_hole)
    if not holes.any():
        raise DataError(f"{mask}: the mask has no hole ({mask_hole} marks the holes; see "
                        "--mask-hole)")
    result = inpaint_image(model, picture, holes, size, dev)
    write_image(out, result)
    log.info("%s: inpainted %s (%dx%d, %.1f %% holes) with %s -> %s", checkpoint, image,
             picture.shape[1], picture.shape[0], 100 * holes.mean() / 255, meta["experiment"], out)
    return Path(out)
