"""Benchmark: PNG -> JPG + masks + overlay on synthetic CelebA-HQ-sized PNGs, the workflow's
functions (threaded, staged, atomic) against a naive one-process loop over the same files.

    python bench/data_prep.py                          # 1,000 PNGs of 1024 x 1024 (CelebA-HQ)
    python bench/data_prep.py --n 150 --size 1024      # a few minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from _common import print_table

from ndmha.data.demo import draw_face, draw_mask
from ndmha.data.prepare import binarize_mask, convert_images, overlay_masks, prepare_masks
from ndmha.io import map_parallel

FULL = 30_000


def make_inputs(root: Path, n: int, size: int, threads: int) -> tuple[Path, Path]:
    """``n`` face PNGs of ``size`` px (drawn at 256, upscaled, with sensor noise) and QD-IMD-like
    512 px masks."""
    faces, masks = root / "faces", root / "masks"
    faces.mkdir()
    masks.mkdir()

    def one(i: int) -> None:
        face = cv2.resize(draw_face(256, 0, i), (size, size), interpolation=cv2.INTER_CUBIC)
        noise = np.random.default_rng(i).normal(0, 3, face.shape)
        cv2.imwrite(str(faces / f"{i:05d}.png"), np.clip(face + noise, 0, 255).astype(np.uint8))
        cv2.imwrite(str(masks / f"{i:05d}.png"), draw_mask(512, 0, i))

    map_parallel(one, list(range(n)), threads, "synthetic inputs")
    return faces, masks


def naive(faces: Path, masks: Path, out: Path, size: int, quality: int) -> None:
    """The straightforward loop: one file after the other, in one process."""
    for d in ("images", "masks", "corrupted"):
        (out / d).mkdir(parents=True)
    for i, (face, mask) in enumerate(zip(sorted(faces.iterdir()), sorted(masks.iterdir()))):
        image = cv2.resize(cv2.imread(str(face)), (size, size), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(out / "images" / f"{face.stem}.jpg"), image,
                    [cv2.IMWRITE_JPEG_QUALITY, quality])
        hole = binarize_mask(cv2.imread(str(mask), cv2.IMREAD_GRAYSCALE), size)
        cv2.imwrite(str(out / "masks" / f"{i:05d}.png"), hole)
        jpg = cv2.imread(str(out / "images" / f"{face.stem}.jpg"))
        cv2.imwrite(str(out / "corrupted" / f"{face.stem}.png"),
                    cv2.bitwise_and(jpg, jpg, mask=cv2.bitwise_not(hole)))


def workflow(faces: Path, masks: Path, out: Path, n: int, size: int, quality: int,
             threads: int) -> dict[str, float]:
    """The workflow's three data rules, as the rules call them; seconds per stage."""
    times = {}
    began = time.perf_counter()
    convert_images(faces, out / "images", n, size, quality, threads)
    times["convert"] = time.perf_counter() - began
    began = time.perf_counter()
    prepare_masks(masks, out / "masks", n, size, "white", threads)
    times["masks"] = time.perf_counter() - began
    began = time.perf_counter()
    overlay_masks(out / "images", out / "masks", out / "corrupted", out / "pairs.csv", threads)
    times["overlay"] = time.perf_counter() - began
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--size", type=int, default=1024, help="source PNG size")
    parser.add_argument("--out-size", type=int, default=256)
    parser.add_argument("--quality", type=int, default=95)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        faces, masks = make_inputs(root, args.n, args.size, args.threads)
        cv2.setNumThreads(-1)  # the naive loop gets OpenCV's default threading
        began = time.perf_counter()
        naive(faces, masks, root / "naive", args.out_size, args.quality)
        naive_s = time.perf_counter() - began
        stages = workflow(faces, masks, root / "workflow", args.n, args.out_size,
                          args.quality, args.threads)
    ours = sum(stages.values())
    rows = [
        {"method": "naive one-process loop", "seconds": naive_s, "images/s": args.n / naive_s,
         "projected 30,000 (min)": naive_s / args.n * FULL / 60, "speed-up": 1.0},
        {"method": f"workflow functions, {args.threads} threads "
                   f"(convert {stages['convert']:.1f} s, masks {stages['masks']:.1f} s, "
                   f"overlay {stages['overlay']:.1f} s)",
         "seconds": ours, "images/s": args.n / ours,
         "projected 30,000 (min)": ours / args.n * FULL / 60, "speed-up": naive_s / ours},
    ]
    print_table(f"Data preparation: {args.n} PNGs of {args.size}x{args.size} -> "
                f"{args.out_size}px JPG + masks + overlay, {os.cpu_count()} CPU cores", rows)


if __name__ == "__main__":
    main()
