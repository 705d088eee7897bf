"""The mask families later papers compare on, ported so that a seed gives the original's mask.

- **LaMa** (Suvorov et al., WACV 2022; ``advimman/lama``): ``bin/gen_mask_dataset.py`` with
  ``configs/data_gen/random_{thin,medium,thick}_256.yaml``. For one 256 px image it draws five
  candidate masks from ``MixedMaskGenerator`` (irregular strokes of ``cv2.line``, or with the
  medium and thick settings rectangles at probability 0.3 / 1.3), proposes a square crop for
  each, drops those with more than half the image missing, and keeps one at random. The
  generators run with ``iter_i`` unset, so their ramps sit at their ends: strokes up to
  ``max_times + 1``, boxes up to ``bbox_max_size`` wide. An image whose five candidates are all
  dropped gets no mask (LaMa leaves it out of the test set): :func:`lama_mask` returns None.
- **MAT** (Li et al., CVPR 2022; ``fenglinglwb/MAT``): ``datasets/mask_generator_256.py``'s
  ``RandomMask`` (large) and ``mask_generator_256_small.py``'s (small): rectangles, then
  PIL-drawn brush strokes, redrawn until some but not all of the image is missing.

Both originals draw from numpy's global generator and neither sets a seed. Here mask ``seed``
draws from ``numpy.random.RandomState(seed)``, the same stream as ``np.random.seed(seed)``
followed by the original, call for call: the masks are byte-equal to the originals' at that
seed (tests/fixtures/protocol_masks.json holds the originals' figures, made once outside this
project). Every mask is 255 in its holes, 0 elsewhere (``ndmha.data.prepare``'s convention).
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from PIL import Image, ImageDraw

SIZE = 256
#: configs/data_gen/random_{family}_256.yaml: irregular strokes, rectangles (None: none)
LAMA = {
    "thin": {"irregular": {"min_times": 4, "max_times": 50, "max_width": 10, "max_angle": 4,
                           "max_len": 40}, "box_proba": 0.0, "box": None},
    "medium": {"irregular": {"min_times": 4, "max_times": 5, "max_width": 50, "max_angle": 4,
                             "max_len": 100}, "box_proba": 0.3,
               "box": {"margin": 0, "bbox_min_size": 10, "bbox_max_size": 50, "min_times": 1,
                       "max_times": 5}},
    "thick": {"irregular": {"min_times": 1, "max_times": 5, "max_width": 100, "max_angle": 4,
                            "max_len": 200}, "box_proba": 0.3,
              "box": {"margin": 10, "bbox_min_size": 30, "bbox_max_size": 150, "min_times": 1,
                      "max_times": 3}},
}
LAMA_VARIANTS, LAMA_MAX_HOLES = 5, 0.5  # variants_n, max_tamper_area
#: MAT's two generators: (rectangle tries at s/2, rectangle tries at s, brush tries)
MAT = {"large": (4, 2, 8), "small": (2, 2, 3)}


def _strokes(rng: np.random.RandomState, size: int, min_times: int, max_times: int,
             max_width: int, max_angle: int, max_len: int) -> np.ndarray:
    """LaMa's irregular mask (``make_random_irregular_mask``, lines), its ramp at the end."""
    mask = np.zeros((size, size), np.float32)
    for i in range(rng.randint(min_times, max_times + 2)):  # the ramp's max_times + 1
        x, y = rng.randint(size), rng.randint(size)
        for _ in range(1 + rng.randint(5)):
            angle = 0.01 + rng.randint(max_angle)
            if i % 2 == 0:
                angle = 2 * 3.1415926 - angle
            length = 10 + rng.randint(max_len)
            width = 5 + rng.randint(max_width)
            end_x = np.clip((x + length * np.sin(angle)).astype(np.int32), 0, size)
            end_y = np.clip((y + length * np.cos(angle)).astype(np.int32), 0, size)
            cv2.line(mask, (x, y), (end_x, end_y), 1.0, width)
            x, y = end_x, end_y
    return mask


def _boxes(rng: np.random.RandomState, size: int, margin: int, bbox_min_size: int,
           bbox_max_size: int, min_times: int, max_times: int) -> np.ndarray:
    """LaMa's rectangle mask (``make_random_rectangle_mask``), its ramp at the end."""
    mask = np.zeros((size, size), np.float32)
    largest = min(bbox_max_size + 1, size - 2 * margin)  # the ramp's bbox_max_size + 1
    for _ in range(rng.randint(min_times, max_times + 1)):
        w, h = rng.randint(bbox_min_size, largest), rng.randint(bbox_min_size, largest)
        x = rng.randint(margin, size - margin - w + 1)
        y = rng.randint(margin, size - margin - h + 1)
        mask[y:y + h, x:x + w] = 1
    return mask


def lama_mask(family: str, seed: int, size: int = SIZE) -> np.ndarray | None:
    """LaMa's eval mask for one square image at ``seed`` (None: LaMa leaves the image out)."""
    settings = LAMA[family]
    rng = np.random.RandomState(seed)
    probas = np.array([1.0] + ([settings["box_proba"]] if settings["box"] else []), "float32")
    probas /= probas.sum()
    candidates = []
    for _ in range(LAMA_VARIANTS):  # all five drawn first, then cropped and filtered
        kind = rng.choice(len(probas), p=probas)
        candidates.append(_strokes(rng, size, **settings["irregular"]) if kind == 0
                          else _boxes(rng, size, **settings["box"]))
    kept = []
    for mask in candidates:
        if not mask.any():  # the original's crop proposal fails on it: the image is skipped
            return None
        rng.randint(0, 1)  # the square crop of a square image: the whole image
        if mask.mean() <= LAMA_MAX_HOLES:
            kept.append(mask)
    chosen = rng.choice(len(kept), size=min(len(kept), 1), replace=False)
    return (kept[chosen[0]] * 255).astype(np.uint8) if len(chosen) else None


def _brush(rng: np.random.RandomState, size: int, tries: int) -> np.ndarray:
    """MAT's ``RandomBrush``: polylines with round joints, 1 in the strokes."""
    mean_angle, angle_range = 2 * math.pi / 5, 2 * math.pi / 15
    radius = math.sqrt(2 * size * size) / 8
    canvas = Image.new("L", (size, size), 0)
    for _ in range(rng.randint(tries)):
        vertices = rng.randint(4, 18)
        low = mean_angle - rng.uniform(0, angle_range)
        high = mean_angle + rng.uniform(0, angle_range)
        angles = [2 * math.pi - rng.uniform(low, high) if i % 2 == 0 else rng.uniform(low, high)
                  for i in range(vertices)]
        points = [(int(rng.randint(0, size)), int(rng.randint(0, size)))]
        for angle in angles:
            r = np.clip(rng.normal(loc=radius, scale=radius // 2), 0, 2 * radius)
            points.append((int(np.clip(points[-1][0] + r * math.cos(angle), 0, size)),
                           int(np.clip(points[-1][1] + r * math.sin(angle), 0, size))))
        draw = ImageDraw.Draw(canvas)
        width = int(rng.uniform(12, 48))
        draw.line(points, fill=1, width=width)
        for x, y in points:
            draw.ellipse((x - width // 2, y - width // 2, x + width // 2, y + width // 2), fill=1)
        rng.random_sample(), rng.random_sample()  # the original's two flips that flip nothing
    strokes = np.asarray(canvas, np.uint8)
    if rng.random_sample() > 0.5:
        strokes = np.flip(strokes, 0)
    if rng.random_sample() > 0.5:
        strokes = np.flip(strokes, 1)
    return strokes


def mat_mask(family: str, seed: int, size: int = SIZE) -> np.ndarray:
    """MAT's ``RandomMask(size)`` (hole_range [0, 1]) at ``seed``, 255 in the holes."""
    half_tries, full_tries, brush_tries = MAT[family]
    rng = np.random.RandomState(seed)
    while True:
        kept = np.ones((size, size), np.uint8)
        for tries, largest in ((half_tries, size // 2), (full_tries, size)):
            for _ in range(rng.randint(tries)):
                w, h = rng.randint(largest), rng.randint(largest)
                x = rng.randint(-(w // 2), size - w + w // 2)
                y = rng.randint(-(h // 2), size - h + h // 2)
                kept[max(y, 0):min(y + h, size), max(x, 0):min(x + w, size)] = 0
        kept = np.logical_and(kept, 1 - _brush(rng, size, brush_tries))
        if 0 < 1 - kept.mean() < 1:
            return ((1 - kept) * 255).astype(np.uint8)


#: the families by name: (generator, its family)
FAMILIES = {**{f"lama-{f}": (lama_mask, f) for f in LAMA},
            **{f"mat-{f}": (mat_mask, f) for f in MAT}}


def family_mask(name: str, seed: int, size: int = SIZE) -> np.ndarray | None:
    """The mask of family ``name`` (``lama-thin`` ... ``mat-large``) at ``seed``."""
    generator, family = FAMILIES[name]
    return generator(family, seed, size)
