"""Hole-ratio categories and mask protocols: QD-IMD (mask i with image i) and the NVIDIA
Irregular Mask test set (Liu et al., ECCV 2018), whose six hole-ratio categories, each half with
holes touching the image border, are computed here from the mask files themselves.

A category is the hole ratio's bucket, ``[0.1 k, 0.1 (k + 1))`` for k < 6 (the NVIDIA test set's
1-10 % ... 50-60 %, and LaMa's and MAT's per-bucket tables), with the rest in ``60-100%``. Border
contact: a hole pixel within ``border_margin`` pixels of the image's edge (1: the outermost row or
column itself).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import pandas as pd

from ndmha.errors import DataError
from ndmha.io import list_images, map_parallel, read_image

log = logging.getLogger("ndmha")

#: hole-area buckets (fractions) as LaMa and MAT report them; the last one takes the rest
BUCKET_EDGES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 1.0)
BUCKETS = tuple(f"{round(a * 100)}-{round(b * 100)}%" for a, b in
                zip(BUCKET_EDGES[:-1], BUCKET_EDGES[1:]))
#: the NVIDIA test set's six categories (the buckets below 60 %)
NVIDIA_CATEGORIES = BUCKETS[:6]
HOLE_LEVEL = 127  # a grayscale mask's pixel above this is a hole (white holes), the one threshold


def hole_buckets(ratios: Sequence[float]) -> pd.Categorical:
    """Each hole ratio's bucket (``"10-20%"`` for 0.15), ordered as :data:`BUCKETS`:
    ``pandas.cut`` on [low, high), the last bucket's upper edge moved one float past 1.0 so that
    a hole ratio of 100 % stays in it. A ratio outside [0, 1] is an error naming it."""
    bins = [*BUCKET_EDGES[:-1], float(np.nextafter(BUCKET_EDGES[-1], np.inf))]
    values = np.asarray(ratios, dtype=float)
    cut = pd.cut(values, bins, right=False, labels=list(BUCKETS), ordered=True)
    outside = values[pd.isna(cut)]
    if len(outside):
        raise ValueError(f"hole ratio {outside[0]} is outside [{BUCKET_EDGES[0]}, "
                         f"{BUCKET_EDGES[-1]}]")
    return cut


def bucket_label(ratio: float) -> str:
    """The bucket of one hole ratio (:func:`hole_buckets`)."""
    return str(hole_buckets([ratio])[0])


def is_hole(mask: np.ndarray) -> np.ndarray:
    """Where a grayscale uint8 mask (255 = hole) marks a hole: ``mask > HOLE_LEVEL``, boolean."""
    return mask > HOLE_LEVEL


def to_holes(mask: np.ndarray, mask_hole: str = "white") -> np.ndarray:
    """Source mask (grayscale uint8) -> our convention: uint8, 255 = hole, thresholded at
    :data:`HOLE_LEVEL`."""
    if mask_hole not in ("white", "black"):
        raise ValueError(f"mask hole colour must be 'white' or 'black', not {mask_hole!r}")
    holes = is_hole(mask) if mask_hole == "white" else ~is_hole(mask)
    return holes.astype(np.uint8) * 255


def grey_pixels(mask: np.ndarray, path: str | Path, mask_binary: str = "threshold") -> int:
    """Pixels of the grayscale mask read from ``path`` that are neither 0 nor 255 (a binary mask
    has none). ``mask_binary`` ``strict``: any is an error naming the file (a resized or anti-aliased
    copy of a mask set is not that set); ``threshold``: they are thresholded at
    :data:`HOLE_LEVEL` where the mask is prepared."""
    grey = int(np.count_nonzero((mask > 0) & (mask < 255)))
    if grey and mask_binary == "strict":
        raise DataError(f"{path}: not a binary mask ({grey} pixels neither 0 nor 255); set "
                        f"data.mask_binary: threshold to threshold it at {HOLE_LEVEL}")
    return grey


def touches_border(holes: np.ndarray, margin: int = 1) -> bool:
    """Whether a hole pixel (``holes`` boolean) lies within ``margin`` pixels of the edge."""
    m = max(1, int(margin))
    return bool(holes[:m].any() or holes[-m:].any() or holes[:, :m].any() or holes[:, -m:].any())


def mask_category(mask: np.ndarray, mask_hole: str = "white", border_margin: int = 1
                  ) -> dict[str, object]:
    """A source mask's hole ratio at its own resolution, its category (:func:`bucket_label`) and
    its border contact (:func:`touches_border`)."""
    holes = to_holes(mask, mask_hole) > 0
    ratio = float(holes.mean())
    return {"mask_hole_ratio": round(ratio, 6), "mask_category": bucket_label(ratio),
            "mask_border": touches_border(holes, border_margin)}


def nvidia_index(masks_dir: str | Path, mask_hole: str = "white", border_margin: int = 1,
                 expected: int = 0, mask_binary: str = "strict", threads: int = 1) -> pd.DataFrame:
    """Every mask of an NVIDIA-style folder with its category and border contact, read from the
    file (not its name or place): columns mask (path), mask_hole_ratio, mask_category,
    mask_border, sorted by file name.

    ``expected`` > 0: the folder must hold exactly that many masks (the test set: 12,000).
    ``mask_binary``: see :func:`grey_pixels`.
    """
    files = list_images(masks_dir, what="masks")
    if expected and len(files) != expected:
        raise DataError(f"{masks_dir}: found {len(files)} masks, data.mask_count says "
                        f"{expected} (the NVIDIA test set has 12,000)")
    if not files:
        raise DataError(f"{masks_dir}: no masks (PNG, JPG, BMP) in the folder")

    def one(path: Path) -> dict[str, object]:
        mask = read_image(path, cv2.IMREAD_GRAYSCALE)
        grey_pixels(mask, path, mask_binary)
        return {"mask": path, **mask_category(mask, mask_hole, border_margin)}
    index = pd.DataFrame(map_parallel(one, files, threads, "mask categories"))
    counts = index.groupby(["mask_category", "mask_border"]).size()
    log.info("%d masks in %s by category and border contact:\n%s", len(index), masks_dir,
             counts.to_string())
    return index


def balanced_order(index: pd.DataFrame) -> list[int]:
    """Row numbers of ``index`` (:func:`nvidia_index`) in the order images receive them: round
    robin over the (category, border) groups in category order, each group in file-name order,
    so that the first k images of any split get masks spread evenly over the six categories and
    both border kinds (k = 600: 50 of each group). A group that runs out drops from the round."""
    groups: dict[tuple[str, bool], list[int]] = defaultdict(list)
    for i, row in enumerate(index.itertuples()):
        groups[(row.mask_category, bool(row.mask_border))].append(i)
    keys = sorted(groups, key=lambda k: (BUCKETS.index(k[0]), not k[1]))
    queues = [list(reversed(groups[k])) for k in keys]
    order: list[int] = []
    while any(queues):
        for queue in queues:
            if queue:
                order.append(queue.pop())
    return order
