"""Data preparation: PNG -> JPG conversion, mask preparation and mask overlay.

Mask convention used everywhere downstream: a single-channel PNG, **255 = hole** (missing pixel),
0 = valid. Source masks whose holes are black are inverted when prepared. The model input is the
corrupted image plus this mask scaled to {0, 1} (1 = hole).
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from ndmha.data.masks import HOLE_LEVEL, grey_pixels, is_hole, to_holes
from ndmha.errors import DataError
from ndmha.io import (
    atomic_open,
    check_unique_ids,
    list_images,
    map_parallel,
    read_image,
    relative_posix,
    staged_dir,
    take_first,
    write_bytes,
    write_image,
)

log = logging.getLogger("ndmha")

PAIRS_COLUMNS = ("id", "image", "mask", "corrupted", "hole_ratio")
JPG_SUFFIXES = (".jpg", ".jpeg")


def square_resize(image: np.ndarray, size: int, interpolation: int) -> np.ndarray:
    """Centre-crop ``image`` to a square, then resize it to ``size`` x ``size``."""
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    image = image[top:top + side, left:left + side]
    if side != size:
        image = cv2.resize(image, (size, size), interpolation=interpolation)
    return image


def read_face(path: str | Path) -> tuple[np.ndarray, str | None]:
    """An image as 8-bit BGR, and what had to be converted to get there (None if nothing):
    grayscale is expanded to BGR, an alpha channel is dropped, 16-bit is scaled to 8-bit."""
    image = read_image(path, cv2.IMREAD_UNCHANGED)
    notes = []
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
        notes.append("16-bit scaled to 8-bit")
    elif image.dtype != np.uint8:
        raise DataError(f"{path}: unsupported pixel type {image.dtype} (8- or 16-bit expected)")
    if image.ndim == 2 or image.shape[2] == 1:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        notes.append("grayscale expanded to RGB")
    elif image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
        notes.append("alpha channel dropped")
    return image, ", ".join(notes) or None


def _report_conversions(notes: list[tuple[Path, str | None]], what: str) -> None:
    converted = [(path, note) for path, note in notes if note]
    for path, note in converted[:5]:
        log.warning("%s: %s", path, note)
    if converted:
        log.warning("%d of %d %s were converted (listed: the first %d)", len(converted),
                    len(notes), what, min(5, len(converted)))


def convert_listed(images: Sequence[tuple[str, Path]], out_dir: str | Path, size: int,
                   quality: int = 95, threads: int = 1, fingerprint: dict | None = None) -> None:
    """Convert each ``(id, source)`` to ``out_dir/<id>.jpg`` at ``size`` pixels.

    Images are centre-cropped to a square and resized with INTER_AREA (CelebA-HQ's 1024 px -> 256 px).
    Grayscale, RGBA and 16-bit images are converted (see :func:`read_face`) and the log says which.
    A source that is already a colour JPG of ``size`` x ``size`` (Places2's 256 px release) is
    copied byte for byte: encoding it again would only lose detail. Each JPG is written
    atomically into a staging folder that a rerun with the same ``fingerprint`` resumes.
    """
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    with staged_dir(out_dir, {**(fingerprint or {}), "size": size, "quality": quality}) as stage:
        def convert(item: tuple[str, Path]) -> tuple[Path, str | None]:
            image_id, src = item
            dst = stage / f"{image_id}.jpg"
            if dst.exists():
                return src, None
            image, note = read_face(src)
            if src.suffix.lower() in JPG_SUFFIXES and note is None \
                    and image.shape[:2] == (size, size):
                write_bytes(dst, src.read_bytes())
            else:
                write_image(dst, square_resize(image, size, cv2.INTER_AREA), params)
            return src, note
        _report_conversions(map_parallel(convert, list(images), threads, "image -> JPG"),
                            "images")


def folder_images(src_dir: str | Path, n_images: int) -> list[tuple[str, Path]]:
    """The first ``n_images`` PNGs of ``src_dir`` (sorted) as ``(id, path)``, the id being the
    file name without extension (unique)."""
    sources = take_first(list_images(src_dir, (".png",), "PNG images"), n_images, src_dir,
                         "PNG images")
    check_unique_ids(sources, src_dir)
    return [(p.stem, p) for p in sources]


def convert_images(src_dir: str | Path, out_dir: str | Path, n_images: int, size: int,
                   quality: int = 95, threads: int = 1) -> list[Path]:
    """Convert the first ``n_images`` PNGs of ``src_dir`` (sorted) to ``size``-pixel JPGs
    (:func:`convert_listed`)."""
    sources = folder_images(src_dir, n_images)
    convert_listed(sources, out_dir, size, quality, threads,
                   {"src": str(Path(src_dir).resolve()), "n": n_images})
    log.info("converted %d PNGs from %s to %dpx JPG (quality %d) in %s",
             len(sources), src_dir, size, quality, out_dir)
    return [Path(out_dir) / f"{i}.jpg" for i, _ in sources]


def binarize_mask(mask: np.ndarray, size: int, mask_hole: str = "white") -> np.ndarray:
    """Source mask -> our convention (:func:`to_holes`), centre-cropped and nearest-resized to
    ``size`` x ``size``."""
    return square_resize(to_holes(mask, mask_hole), size, cv2.INTER_NEAREST)


def mask_name(rank: int, total: int) -> str:
    """The prepared mask of the image of rank ``rank`` among ``total``: ``00000.png``..., wide
    enough that the names sort in rank order (6 digits from 100,001 images on)."""
    return f"{rank:0{max(5, len(str(max(total - 1, 0))))}d}.png"


def prepare_listed(masks: Sequence[tuple[int, Path]], total: int, out_dir: str | Path, size: int,
                   mask_hole: str = "white", mask_binary: str = "threshold", threads: int = 1,
                   fingerprint: dict | None = None) -> None:
    """Binarize and resize each ``(rank, source)`` mask to ``out_dir/<mask_name(rank)>``.

    ``mask_binary`` (:func:`~ndmha.data.masks.grey_pixels`) ``threshold``: grey pixels are
    thresholded at :data:`HOLE_LEVEL` and the log says which masks had them; ``strict``: a mask
    with grey pixels is an error naming it.
    """
    fingerprint = {**(fingerprint or {}), "size": size, "mask_hole": mask_hole, "total": total}
    with staged_dir(out_dir, fingerprint) as stage:
        def prepare(item: tuple[int, Path]) -> tuple[Path, str | None]:
            rank, src = item
            dst = stage / mask_name(rank, total)
            if dst.exists():
                return src, None
            mask = read_image(src, cv2.IMREAD_GRAYSCALE)
            grey = grey_pixels(mask, src, mask_binary)
            write_image(dst, binarize_mask(mask, size, mask_hole))
            note = f"not binary ({grey} grey pixels), thresholded at {HOLE_LEVEL}"
            return src, note if grey else None
        _report_conversions(map_parallel(prepare, list(masks), threads, "masks"), "masks")


def prepare_masks(src_dir: str | Path, out_dir: str | Path, n_masks: int, size: int,
                  mask_hole: str = "white", threads: int = 1) -> list[Path]:
    """Binarize and resize the first ``n_masks`` masks of ``src_dir`` (sorted) into ``out_dir``.

    Output masks are named by their rank (``00000.png``...) so that image i pairs with mask i.
    """
    sources = take_first(list_images(src_dir, what="masks"), n_masks, src_dir, "masks")
    prepare_listed(list(enumerate(sources)), len(sources), out_dir, size, mask_hole,
                   threads=threads, fingerprint={"src": str(Path(src_dir).resolve()),
                                                 "n": n_masks})
    log.info("prepared %d masks from %s (%s = hole) at %dpx in %s",
             len(sources), src_dir, mask_hole, size, out_dir)
    return [Path(out_dir) / mask_name(i, len(sources)) for i in range(len(sources))]


def overlay(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Corrupt ``image`` with ``mask`` (255 = hole): ``cv2.bitwise_and`` zeroes the hole pixels."""
    keep = cv2.bitwise_not(mask)
    return cv2.bitwise_and(image, image, mask=keep)


def overlay_masks(images_dir: str | Path, masks_dir: str | Path, out_dir: str | Path,
                  pairs_csv: str | Path, threads: int = 1) -> None:
    """Pair image i with mask i (both sorted), write corrupted PNGs and a pairs CSV.

    The corrupted images are lossless PNG so that the holes stay exactly 0. ``pairs_csv`` lists
    id, image, mask, corrupted (paths relative to the CSV's folder) and the hole ratio.
    """
    images = list_images(images_dir, what="images")
    masks = list_images(masks_dir, what="masks")
    if len(masks) < len(images):
        raise DataError(f"{masks_dir}: found {len(masks)} masks for {len(images)} images "
                        f"in {images_dir}")
    check_unique_ids(images, images_dir)
    base = Path(pairs_csv).resolve().parent
    fingerprint = {"images": str(Path(images_dir).resolve()), "masks": str(Path(masks_dir).resolve())}
    with staged_dir(out_dir, fingerprint) as stage:
        def corrupt(item: tuple[Path, Path]) -> dict[str, object]:
            image_path, mask_path = item
            image = read_image(image_path)
            mask = read_image(mask_path, cv2.IMREAD_GRAYSCALE)
            if mask.shape != image.shape[:2]:
                raise DataError(f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]}, image "
                                f"{image_path} is {image.shape[1]}x{image.shape[0]}")
            name = f"{image_path.stem}.png"
            if not (stage / name).exists():
                write_image(stage / name, overlay(image, mask))
            return {
                "id": image_path.stem,
                "image": relative_posix(image_path, base),
                "mask": relative_posix(mask_path, base),
                "corrupted": relative_posix(Path(out_dir) / name, base),
                "hole_ratio": round(float(np.count_nonzero(is_hole(mask))) / mask.size, 6),
            }
        rows = map_parallel(corrupt, list(zip(images, masks)), threads, "overlay")
    with atomic_open(pairs_csv, newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=PAIRS_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    log.info("overlaid %d masks on images; pairs in %s", len(rows), pairs_csv)
