"""Benchmark: how photo-like the demo's faces are, by two numbers measured the same way on the
demo and on scikit-image's bundled photographs.

1. **The training-free floor**: Telea's inpainting (``cv2.inpaint``, radius 3) PSNR of the
   composite, the demo's test images with their test masks, against every bundled colour
   photograph centre-cropped and resized (INTER_AREA) to the same size, each with every one of
   those masks. Diffusion fills smooth regions well, so the easier the images, the higher it is.
2. **The power-spectrum slope**: grayscale (BT.601), mean removed, a Hann window against edge
   leakage, the 2-D power spectrum radially averaged over integer frequencies (cycles per image),
   and a least-squares line through log power against log frequency over the band
   ``[2, size / 4]`` cycles per image (the lowest frequency is the window's, the top quarter is
   where resizing and JPEG act). Natural images sit near -2 (Field 1987; van der Schaaf & van
   Hateren 1996); white noise is 0, so a flat drawing with added pixel noise reads shallower.

    python study/realism.py --manifest results/data/manifest.csv
"""

from __future__ import annotations

import argparse
import statistics
import sys
import warnings
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))  # shared helpers
from _common import print_table  # noqa: E402

from ndmha.classical import composite, fill  # noqa: E402
from ndmha.data.prepare import square_resize  # noqa: E402
from ndmha.data.split import read_manifest  # noqa: E402
from ndmha.io import read_image  # noqa: E402

#: scikit-image's bundled colour photographs of scenes (no download needed); its Hubble deep field
#: is left out: point sources on black have a near-white spectrum (slope -0.28 at 64 px), not a
#: scene's
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2) / 255.0 ** 2
    return float(10 * np.log10(1.0 / mse)) if mse > 0 else float("inf")


def spectrum_slope(bgr: np.ndarray) -> float:
    """The slope of the radially averaged power spectrum (see the module's docstring)."""
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).astype(np.float64)
    n = min(gray.shape)
    gray = gray[:n, :n] - gray[:n, :n].mean()
    window = np.outer(np.hanning(n), np.hanning(n))
    power = np.abs(np.fft.fftshift(np.fft.fft2(gray * window))) ** 2
    y, x = np.indices(power.shape) - n // 2
    radius = np.rint(np.hypot(x, y)).astype(int)
    sums = np.bincount(radius.ravel(), power.ravel())
    counts = np.bincount(radius.ravel())
    freqs = np.arange(2, n // 4 + 1)
    mean_power = sums[freqs] / counts[freqs]
    return float(np.polyfit(np.log(freqs), np.log(mean_power), 1)[0])


def telea_psnr(image: np.ndarray, holes: np.ndarray) -> float:
    corrupted = cv2.bitwise_and(image, image, mask=cv2.bitwise_not(holes))
    return psnr(composite(fill("telea", corrupted, holes, {"radius": 3}), corrupted, holes),
                image)


def photographs(size: int) -> dict[str, np.ndarray]:
    from skimage import data

    photos = {}
    for name in PHOTOS:
        try:
            rgb = getattr(data, name)()
        except Exception as err:  # a bundled file missing from this install: say so, go on
            warnings.warn(f"skimage.data.{name}: {err}")
            continue
        photos[name] = square_resize(cv2.cvtColor(rgb[..., :3], cv2.COLOR_RGB2BGR), size,
                                     cv2.INTER_AREA)
    return photos


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", required=True, help="a workflow's results/data/manifest.csv")
    parser.add_argument("--split", default="test")
    args = parser.parse_args()
    frame = read_manifest(args.manifest, args.split)
    images = [read_image(p) for p in frame["image"]]
    masks = [read_image(p, cv2.IMREAD_GRAYSCALE) for p in frame["mask"]]
    size = images[0].shape[0]
    rows = [{"images": f"demo faces ({len(images)} {args.split} images)",
             "Telea PSNR (dB)": statistics.fmean(telea_psnr(i, m) for i, m in zip(images, masks)),
             "spectrum slope": statistics.fmean(spectrum_slope(i) for i in images)}]
    photos = photographs(size)
    for name, photo in photos.items():
        rows.append({"images": f"skimage {name}",
                     "Telea PSNR (dB)": statistics.fmean(telea_psnr(photo, m) for m in masks),
                     "spectrum slope": spectrum_slope(photo)})
    rows.append({"images": f"mean of the {len(photos)} photographs",
                 "Telea PSNR (dB)": statistics.fmean(r["Telea PSNR (dB)"] for r in rows[1:]),
                 "spectrum slope": statistics.fmean(r["spectrum slope"] for r in rows[1:])})
    print_table(f"How photo-like: {size} px, the {len(masks)} {args.split} masks of "
                f"{Path(args.manifest)}; slope over [2, {size // 4}] cycles per image", rows)


if __name__ == "__main__":
    main()
