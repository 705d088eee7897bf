"""Embedded demo dataset: deterministic procedural faces and QD-IMD-like irregular masks.

CelebA-HQ and QD-IMD cannot be downloaded here, so the default workflow runs on data this module
draws itself. Faces: a background, hair, a face ellipse with a skin tone, ears, neck, eyes with iris
and pupil, brows, nose and mouth, with varied pose (roll, yaw, position, scale), colours and lighting.
Masks: random thick strokes on black, white = hole (QD-IMD's polarity), with the hole ratio spread
uniformly over a configured range (5-60 % by default); or boxes, blobs and straight strokes with
sharp corners in the NVIDIA test set's six categories, half of them touching the border. The
faces can also be laid out as Places2 is (for its protocol's demo). Every image depends only on
(seed, index).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from ndmha.io import map_parallel, staged_dir, write_image

log = logging.getLogger("ndmha")

SUPERSAMPLE = 2  # faces are drawn at 2x and downsampled with INTER_AREA for anti-aliasing

SKIN_TONES_BGR = np.array([
    (189, 224, 255), (160, 200, 241), (130, 180, 224), (110, 160, 198),
    (90, 134, 176), (66, 105, 141), (45, 76, 102), (35, 57, 80),
], dtype=np.float64)
HAIR_BGR = np.array([
    (20, 20, 25), (30, 45, 70), (40, 70, 120), (70, 120, 190), (140, 170, 200),
    (190, 190, 190), (30, 30, 120), (60, 60, 60),
], dtype=np.float64)
IRIS_BGR = np.array([(40, 60, 90), (120, 90, 40), (70, 110, 60), (30, 40, 50), (140, 120, 90)],
                    dtype=np.float64)


def _color(rng: np.random.Generator, palette: np.ndarray, jitter: float = 12.0) -> tuple:
    base = palette[rng.integers(len(palette))] + rng.normal(0.0, jitter, 3)
    return tuple(float(c) for c in np.clip(base, 0, 255))


def _pt(x: float, y: float) -> tuple[int, int]:
    return int(round(x)), int(round(y))


@dataclass(frozen=True)
class _Pose:
    """Where the head sits and how it looks: centre, half width and height of the face ellipse,
    in-plane roll (degrees), yaw (features shift sideways as the head turns) and the colours."""

    cx: float
    cy: float
    fw: float
    fh: float
    roll: float
    yaw: float
    skin: tuple
    hair: tuple

    @property
    def shade(self) -> tuple:
        return tuple(c * 0.8 for c in self.skin)

    def at(self, u: float, v: float) -> tuple[int, int]:
        """A point in face coordinates (u, v in face half-sizes), rolled and shifted by the yaw."""
        rot = np.deg2rad(self.roll)
        cos, sin = np.cos(rot), np.sin(rot)
        u = u + self.yaw
        return _pt(self.cx + self.fw * (u * cos - v * sin), self.cy + self.fh * (u * sin + v * cos))


def _background(rng: np.random.Generator, yy: np.ndarray) -> np.ndarray:
    """A vertical gradient between two random colours (float BGR)."""
    top, bottom = rng.uniform(30, 230, 3), rng.uniform(30, 230, 3)
    return np.ascontiguousarray(top[None, None] * (1 - yy[..., None])
                                + bottom[None, None] * yy[..., None])


def _pose(rng: np.random.Generator, s: int) -> _Pose:
    """Pose, proportions and colours of one face on an ``s`` px canvas."""
    cx = s * (0.5 + rng.uniform(-0.06, 0.06))
    cy = s * (0.52 + rng.uniform(-0.05, 0.05))
    fw = s * rng.uniform(0.24, 0.31)
    fh = fw * rng.uniform(1.2, 1.4)
    roll, yaw = rng.uniform(-15, 15), rng.uniform(-0.25, 0.25)
    return _Pose(cx, cy, fw, fh, roll, yaw, _color(rng, SKIN_TONES_BGR), _color(rng, HAIR_BGR, 10))


def _head(canvas: np.ndarray, rng: np.random.Generator, s: int, p: _Pose) -> None:
    """Shoulders and neck, hair behind the head (long or short), ears, the face, the fringe."""
    cv2.ellipse(canvas, _pt(p.cx, s * 1.05), _pt(s * 0.45, s * 0.22), 0, 180, 360,
                _color(rng, np.array([(60, 60, 160), (150, 90, 40), (50, 50, 50), (200, 200, 210)])),
                -1, cv2.LINE_AA)
    cv2.rectangle(canvas, _pt(p.cx - p.fw * 0.45, p.cy + p.fh * 0.5),
                  _pt(p.cx + p.fw * 0.45, s * 0.95), p.shade, -1)
    hair_len = rng.uniform(0.9, 1.6)
    cv2.ellipse(canvas, _pt(p.cx, p.cy - p.fh * 0.1), _pt(p.fw * 1.18, p.fh * hair_len * 0.85),
                p.roll, 0, 360, p.hair, -1, cv2.LINE_AA)
    for side in (-1, 1):
        cv2.ellipse(canvas, _pt(p.cx + side * p.fw * (1.0 - 0.3 * side * p.yaw), p.cy),
                    _pt(p.fw * 0.16, p.fh * 0.2), p.roll, 0, 360, p.shade, -1, cv2.LINE_AA)
    cv2.ellipse(canvas, _pt(p.cx, p.cy), _pt(p.fw, p.fh), p.roll, 0, 360, p.skin, -1, cv2.LINE_AA)
    # the fringe: the upper part of a hair ellipse clipped by the face
    fringe = rng.uniform(0.25, 0.55)
    cv2.ellipse(canvas, _pt(p.cx, p.cy - p.fh * 0.75), _pt(p.fw * 1.05, p.fh * fringe), p.roll,
                180, 360, p.hair, -1, cv2.LINE_AA)


def _eyes(canvas: np.ndarray, rng: np.random.Generator, s: int, p: _Pose) -> float:
    """Eyes (white, iris, pupil) and brows; returns the eyes' height in face coordinates."""
    eye_y, eye_dx = rng.uniform(-0.18, -0.05), rng.uniform(0.36, 0.46)
    eye_w, eye_h = p.fw * rng.uniform(0.16, 0.22), p.fh * rng.uniform(0.06, 0.09)
    iris = _color(rng, IRIS_BGR, 8)
    brow_thick = max(1, int(s * rng.uniform(0.008, 0.016)))
    for side in (-1, 1):
        ex = side * eye_dx
        cv2.ellipse(canvas, p.at(ex, eye_y), _pt(eye_w, eye_h), p.roll, 0, 360, (235, 240, 245),
                    -1, cv2.LINE_AA)
        cv2.circle(canvas, p.at(ex + p.yaw * 0.3, eye_y), max(1, int(eye_h * 0.95)), iris, -1,
                   cv2.LINE_AA)
        cv2.circle(canvas, p.at(ex + p.yaw * 0.3, eye_y), max(1, int(eye_h * 0.45)),
                   (15, 15, 15), -1, cv2.LINE_AA)
        brow_y = eye_y - rng.uniform(0.12, 0.18)
        cv2.line(canvas, p.at(ex - side * 0.15, brow_y + 0.02),
                 p.at(ex + side * 0.18, brow_y - 0.01), tuple(c * 0.7 for c in p.hair),
                 brow_thick, cv2.LINE_AA)
    return eye_y


def _nose(canvas: np.ndarray, rng: np.random.Generator, s: int, p: _Pose, eye_y: float) -> None:
    """A bridge line below the eyes and two nostrils."""
    nose_len = rng.uniform(0.22, 0.32)
    cv2.line(canvas, p.at(0.02, eye_y + 0.05), p.at(0.05, eye_y + 0.05 + nose_len), p.shade,
             max(1, int(s * 0.01)), cv2.LINE_AA)
    for side in (-1, 1):
        cv2.circle(canvas, p.at(side * 0.07, eye_y + 0.07 + nose_len), max(1, int(s * 0.008)),
                   tuple(c * 0.55 for c in p.skin), -1, cv2.LINE_AA)


def _mouth(canvas: np.ndarray, rng: np.random.Generator, s: int, p: _Pose) -> None:
    """Lips as a filled ellipse, a smile or a neutral line on top."""
    mouth_y = rng.uniform(0.42, 0.55)
    lips = tuple(float(c) for c in np.clip(np.array(p.skin) * np.array([0.6, 0.55, 1.05]), 0, 255))
    mw, mh = p.fw * rng.uniform(0.28, 0.42), p.fh * rng.uniform(0.04, 0.09)
    cv2.ellipse(canvas, p.at(0.0, mouth_y), _pt(mw, mh), p.roll, 0, 360, lips, -1, cv2.LINE_AA)
    smile = rng.uniform(-0.3, 1.0)
    cv2.ellipse(canvas, p.at(0.0, mouth_y - 0.02), _pt(mw * 0.9, max(1.0, mh * smile)), p.roll,
                0 if smile >= 0 else 180, 180 if smile >= 0 else 360, (40, 30, 60),
                max(1, int(s * 0.006)), cv2.LINE_AA)


def _light_and_noise(canvas: np.ndarray, rng: np.random.Generator, size: int, xx: np.ndarray,
                     yy: np.ndarray) -> np.ndarray:
    """Directional lighting, then downsampled to ``size`` with a little sensor noise (uint8)."""
    angle = rng.uniform(0, 2 * np.pi)
    light = 1.0 + rng.uniform(0.1, 0.35) * ((xx - 0.5) * np.cos(angle) + (yy - 0.5) * np.sin(angle))
    canvas = canvas * light[..., None] * rng.uniform(0.85, 1.15)
    canvas = cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA)
    canvas += rng.normal(0.0, 2.0, canvas.shape)
    return np.clip(canvas, 0, 255).astype(np.uint8)


def draw_face(size: int, seed: int, index: int) -> np.ndarray:
    """One procedural face, ``size`` x ``size`` BGR uint8, fully determined by ``(seed, index)``:
    drawn at ``SUPERSAMPLE`` times the size, part by part in a fixed order of random draws."""
    rng = np.random.default_rng([seed, index, 0xFACE])
    s = size * SUPERSAMPLE
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float64) / s
    canvas = _background(rng, yy)
    pose = _pose(rng, s)
    _head(canvas, rng, s, pose)
    eye_y = _eyes(canvas, rng, s, pose)
    _nose(canvas, rng, s, pose, eye_y)
    _mouth(canvas, rng, s, pose)
    return _light_and_noise(canvas, rng, size, xx, yy)


def draw_mask(size: int, seed: int, index: int, ratio_range: tuple[float, float] = (0.05, 0.60)
              ) -> np.ndarray:
    """One irregular stroke mask like QD-IMD's: uint8, 255 = hole, 0 = valid.

    Strokes (smooth random walks of varying thickness) are added until the hole covers a target
    ratio drawn uniformly from ``ratio_range``.
    """
    rng = np.random.default_rng([seed, index, 0x3A5C])
    target = rng.uniform(*ratio_range)
    mask = np.zeros((size, size), np.uint8)
    for _ in range(200):
        if mask.mean() / 255.0 >= target:
            break
        thickness = max(1, int(size * rng.uniform(0.02, 0.08)))
        point = rng.uniform(0, size, 2)
        heading = rng.uniform(0, 2 * np.pi)
        points = [point.copy()]
        for _ in range(int(rng.integers(4, 12))):
            heading += rng.normal(0.0, 0.7)
            point = np.clip(point + size * rng.uniform(0.04, 0.12) * np.array(
                [np.cos(heading), np.sin(heading)]), 0, size - 1)
            points.append(point.copy())
        cv2.polylines(mask, [np.round(np.array(points)).astype(np.int32)], False, 255, thickness,
                      cv2.LINE_8)
    return mask


def _nvidia_shape(mask: np.ndarray, rng: np.random.Generator, low: float, high: float,
                  at_edge: bool) -> None:
    """One NVIDIA-like hole on ``mask``: a rotated box, a polygonal blob or a thick stroke of
    straight segments, each with sharp corners (filled polygons, no rounded caps); its centre in
    ``[low, high)`` of the side, or on one edge of the image when ``at_edge``."""
    size = mask.shape[0]
    centre = rng.uniform(low, high, 2)
    if at_edge:
        axis, side = rng.integers(2), rng.integers(2)
        centre[axis] = 0.0 if side == 0 else size - 1.0
    kind = rng.integers(3)
    extent = size * rng.uniform(0.06, 0.16)
    if kind == 0:  # box
        box = ((float(centre[0]), float(centre[1])),
               (float(extent * rng.uniform(0.6, 1.6)), float(extent * rng.uniform(0.6, 1.6))),
               float(rng.uniform(0, 90)))
        cv2.fillPoly(mask, [np.round(cv2.boxPoints(box)).astype(np.int32)], 255, cv2.LINE_8)
    elif kind == 1:  # blob: a star-shaped polygon
        angles = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(5, 10))))
        radii = extent * rng.uniform(0.4, 1.0, len(angles))
        points = centre + np.stack([radii * np.cos(angles), radii * np.sin(angles)], 1)
        cv2.fillPoly(mask, [np.round(points).astype(np.int32)], 255, cv2.LINE_8)
    else:  # stroke: straight thick segments, each a filled quadrilateral
        width = size * rng.uniform(0.02, 0.05)
        point = centre
        for _ in range(int(rng.integers(2, 5))):
            heading = rng.uniform(0, 2 * np.pi)
            end = point + extent * rng.uniform(0.6, 1.4) * np.array([np.cos(heading),
                                                                     np.sin(heading)])
            normal = width / 2 * np.array([-np.sin(heading), np.cos(heading)])
            quad = np.array([point + normal, end + normal, end - normal, point - normal])
            cv2.fillPoly(mask, [np.round(quad).astype(np.int32)], 255, cv2.LINE_8)
            point = end


def draw_nvidia_mask(size: int, seed: int, index: int, border_margin: int = 1) -> np.ndarray:
    """One mask like the NVIDIA Irregular Mask test set's: uint8, 255 = hole; boxes, blobs and
    thick straight strokes with sharp corners. Its category cycles with ``index`` through the six
    hole-ratio categories (1-10 % ... 50-60 %: the ratio drawn uniformly inside the category),
    and every other block of six touches the image border
    (:func:`~ndmha.data.masks.touches_border` with ``border_margin``) while the rest keep
    clear of it, as the test set's two halves do."""
    category, at_border = index % 6, (index // 6) % 2 == 0
    rng = np.random.default_rng([seed, index, 0x4E56])
    lower, upper = max(0.01, 0.1 * category), 0.1 * (category + 1)
    target = rng.uniform(lower + 0.01, upper - 0.01)
    margin = max(1, border_margin)
    inner = (margin + size * 0.1, size - margin - size * 0.1)  # where inner shapes centre
    for _ in range(50):  # an attempt that overshoots its category is drawn again
        mask = np.zeros((size, size), np.uint8)
        if at_border:
            _nvidia_shape(mask, rng, *inner, at_edge=True)
        for _ in range(400):
            if mask.mean() / 255.0 >= target:
                break
            _nvidia_shape(mask, rng, *inner, at_edge=False)
        if not at_border:  # clear the border band
            mask[:margin], mask[-margin:], mask[:, :margin], mask[:, -margin:] = 0, 0, 0, 0
        if lower <= mask.mean() / 255.0 < upper:
            return mask
    raise RuntimeError(f"no NVIDIA-style mask of {lower:.0%}-{upper:.0%} drawn at {size}px "
                       f"(seed {seed}, index {index})")


def _draw_all(folder: str | Path, fingerprint: dict, n: int, name: str,
              draw: Callable[[int], np.ndarray], threads: int, desc: str) -> None:
    """``draw(i)`` for i < ``n`` as ``name.format(i)`` PNGs in ``folder``, through a staging folder
    that a rerun resumes."""
    with staged_dir(folder, {**fingerprint, "n": n}) as out:
        def one(i: int) -> None:
            path = out / name.format(i)
            if not path.exists():
                write_image(path, draw(i))
        map_parallel(one, list(range(n)), threads, desc)


#: the demo's Places2 scene classes (Places365's folder layout: first letter / class)
DEMO_SCENES = ("a/abbey", "b/beach", "c/canyon")


def write_places2_layout(root: str | Path, n_train: int, n_val: int, size: int, seed: int,
                         threads: int = 1) -> None:
    """Procedural images in Places365-Standard's layout and file lists (the 256 px release):
    ``data_256/<class>/<8 digits>.jpg`` listed in ``places365_train_standard.txt``,
    ``val_256/Places365_val_<8 digits>.jpg`` in ``places365_val.txt``, so that the Places2
    reader (:func:`ndmha.data.sources.places2_images`) runs on them. The root is staged and
    renamed when complete."""
    params = [cv2.IMWRITE_JPEG_QUALITY, 95]
    train = [f"{DEMO_SCENES[i % len(DEMO_SCENES)]}/{i // len(DEMO_SCENES) + 1:08d}.jpg"
             for i in range(n_train)]
    val = [f"Places365_val_{i + 1:08d}.jpg" for i in range(n_val)]
    files = [("data_256/" + e, i) for i, e in enumerate(train)]
    files += [("val_256/" + e, n_train + i) for i, e in enumerate(val)]
    with staged_dir(root, {"n_train": n_train, "n_val": n_val, "size": size, "seed": seed}) as out:
        def one(item: tuple[str, int]) -> None:
            path = out / item[0]
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                write_image(path, draw_face(size, seed, item[1]), params)
        map_parallel(one, files, threads, "demo Places2 images")
        (out / "places365_train_standard.txt").write_text(
            "".join(f"/{e} {i % len(DEMO_SCENES)}\n" for i, e in enumerate(train)))
        (out / "places365_val.txt").write_text("".join(f"{e} {i % len(DEMO_SCENES)}\n"
                                                       for i, e in enumerate(val)))


def make_demo_dataset(images_dir: str | Path, masks_dir: str | Path, n_images: int, n_masks: int,
                      size: int, mask_size: int, seed: int,
                      ratio_range: tuple[float, float] = (0.05, 0.60), threads: int = 1,
                      layout: str = "folders", masks: str = "strokes", n_val: int = 0) -> None:
    """Write ``n_images`` faces and ``n_masks`` masks (``00000.png``...), each atomically.

    ``layout`` ``folders``: the faces as ``000000.png``... in ``images_dir``; ``places2``: as a
    Places2 tree in ``images_dir`` (:func:`write_places2_layout`), ``n_val`` of them in its
    validation list. ``masks`` ``strokes``: QD-IMD-like (:func:`draw_mask`, ``ratio_range``);
    ``nvidia``: NVIDIA-test-set-like (:func:`draw_nvidia_mask`)."""
    fingerprint = {"size": size, "mask_size": mask_size, "seed": seed, "ratio": list(ratio_range)}
    if layout == "places2":
        write_places2_layout(images_dir, n_images - n_val, n_val, size, seed, threads)
    else:
        _draw_all(images_dir, fingerprint, n_images, "{:06d}.png",
                  lambda i: draw_face(size, seed, i), threads, "demo faces")
    if masks == "nvidia":
        _draw_all(masks_dir, {**fingerprint, "masks": masks}, n_masks, "{:05d}.png",
                  lambda i: draw_nvidia_mask(mask_size, seed, i), threads, "demo masks")
    else:
        _draw_all(masks_dir, fingerprint, n_masks, "{:05d}.png",
                  lambda i: draw_mask(mask_size, seed, i, ratio_range), threads, "demo masks")
    log.info("demo dataset: %d images (%dpx, %s) in %s, %d %s masks (%dpx) in %s", n_images,
             size, layout, images_dir, n_masks, masks, mask_size, masks_dir)
