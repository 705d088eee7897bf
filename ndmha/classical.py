"""Training-free inpainting: the floor every trained network must clear.

A method that learns nothing is the first row of any honest inpainting table: on the embedded
demo OpenCV's diffusion inpainting scores above every network trained there at the demo's budget.
Each method here fills the holes of a corrupted image (BGR uint8, holes 0) from its known pixels
only; the workflow predicts and scores it like a network (``kind: training-free``: no train job).

- ``telea``: Telea (2004), fast marching, ``cv2.inpaint(..., cv2.INPAINT_TELEA)``;
- ``navier_stokes``: Bertalmio, Bertozzi & Sapiro (2001), ``cv2.INPAINT_NS``;
- ``biharmonic``: Damelin & Hoang (2018), scikit-image's ``inpaint_biharmonic`` (a sparse solve
  per hole region: seconds per image at 256 px, docs/architecture.md "The training-free floor").

This module imports no torch: the Snakefile reads :data:`TRAINING_FREE` at parse time.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import cv2
import numpy as np

from ndmha.data.masks import is_hole


def telea(corrupted: np.ndarray, holes: np.ndarray, radius: float = 3.0) -> np.ndarray:
    """Telea's fast-marching inpainting; ``radius``: the neighbourhood of each filled pixel."""
    return cv2.inpaint(corrupted, holes, float(radius), cv2.INPAINT_TELEA)


def navier_stokes(corrupted: np.ndarray, holes: np.ndarray, radius: float = 3.0) -> np.ndarray:
    """Navier-Stokes (fluid-dynamics) inpainting; ``radius`` as in :func:`telea`."""
    return cv2.inpaint(corrupted, holes, float(radius), cv2.INPAINT_NS)


def biharmonic(corrupted: np.ndarray, holes: np.ndarray) -> np.ndarray:
    """Biharmonic inpainting (scikit-image), per colour channel, rounded back to uint8."""
    from skimage.restoration import inpaint_biharmonic

    filled = inpaint_biharmonic(corrupted.astype(np.float64) / 255.0, is_hole(holes),
                                channel_axis=-1)
    return np.clip(np.rint(filled * 255.0), 0, 255).astype(np.uint8)


#: every training-free method by its config name (``architecture:`` of an experiment)
TRAINING_FREE: dict[str, Callable[..., np.ndarray]] = {
    "telea": telea,
    "navier_stokes": navier_stokes,
    "biharmonic": biharmonic,
}


def method_options(name: str) -> dict[str, Any]:
    """The options of a training-free method and their defaults."""
    parameters = inspect.signature(TRAINING_FREE[name]).parameters
    return {k: p.default for k, p in list(parameters.items())[2:]}


def fill(name: str, corrupted: np.ndarray, holes: np.ndarray,
         options: dict[str, Any] | None = None) -> np.ndarray:
    """The method's output for a corrupted image (BGR uint8) and its holes (uint8, 255 = hole):
    BGR uint8 of the same shape. Known pixels are the method's business; the composite keeps them
    (see :func:`composite`)."""
    return TRAINING_FREE[name](corrupted, holes, **(options or {}))


def composite(filled: np.ndarray, corrupted: np.ndarray, holes: np.ndarray) -> np.ndarray:
    """The method's pixels inside the holes, the input's elsewhere (uint8, byte for byte)."""
    return np.where(is_hole(holes)[..., None], filled, corrupted)
