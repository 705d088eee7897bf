"""Data rules: PNG -> JPG, masks, overlay, split; and their bad-input errors."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from ndmha.data.prepare import (
    binarize_mask,
    convert_images,
    overlay,
    overlay_masks,
    prepare_masks,
)
from ndmha.data.split import make_split, read_manifest, split_sizes
from ndmha.errors import ConfigError, DataError
from ndmha.io import read_image, write_image


def _pngs(folder: Path, n: int, size: tuple[int, int] = (40, 40)) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = folder / f"{i:03d}.png"
        write_image(path, rng.integers(0, 255, (*size, 3), dtype=np.uint8))
        paths.append(path)
    return paths


def test_convert_writes_resized_jpgs(tmp_path: Path) -> None:
    _pngs(tmp_path / "src", 5, size=(40, 60))
    out = convert_images(tmp_path / "src", tmp_path / "jpg", n_images=4, size=32, quality=90,
                         threads=2)
    assert [p.name for p in out] == ["000.jpg", "001.jpg", "002.jpg", "003.jpg"]
    assert sorted(p.name for p in (tmp_path / "jpg").iterdir()) == [p.name for p in out]
    for path in out:
        assert read_image(path).shape == (32, 32, 3)  # centre-cropped to square, resized
    assert not (tmp_path / "jpg.partial").exists()


def test_convert_keeps_content(tmp_path: Path) -> None:
    face = np.zeros((32, 32, 3), np.uint8)
    face[:, :16] = (0, 0, 255)  # red left half (BGR)
    write_image(tmp_path / "src" / "a.png", face)
    (out,) = convert_images(tmp_path / "src", tmp_path / "jpg", n_images=1, size=32, quality=100)
    jpg = read_image(out).astype(int)
    assert np.abs(jpg - face).mean() < 3


def test_convert_rejects_corrupt_png_and_leaves_no_output(tmp_path: Path) -> None:
    _pngs(tmp_path / "src", 3)
    (tmp_path / "src" / "001.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataError, match="001.png"):
        convert_images(tmp_path / "src", tmp_path / "jpg", n_images=3, size=32)
    assert not (tmp_path / "jpg").exists()
    # every file that was written is complete (atomic), and the rerun after a fix completes
    for jpg in (tmp_path / "jpg.partial").glob("*.jpg"):
        read_image(jpg)
    _pngs(tmp_path / "src", 3)
    convert_images(tmp_path / "src", tmp_path / "jpg", n_images=3, size=32)
    assert len(list((tmp_path / "jpg").glob("*.jpg"))) == 3


def test_convert_too_few_images_and_missing_folder(tmp_path: Path) -> None:
    _pngs(tmp_path / "src", 2)
    with pytest.raises(DataError, match=r"found 2 PNG images, but 3 are configured"):
        convert_images(tmp_path / "src", tmp_path / "jpg", n_images=3, size=32)
    with pytest.raises(DataError, match="missing.*does not exist"):
        convert_images(tmp_path / "missing", tmp_path / "jpg", n_images=1, size=32)


def test_non_image_named_png_is_named(tmp_path: Path) -> None:
    _pngs(tmp_path / "src", 1)
    (tmp_path / "src" / "zz.png").write_text("I am a text file")
    with pytest.raises(DataError, match="zz.png: cannot decode"):
        convert_images(tmp_path / "src", tmp_path / "jpg", n_images=2, size=32)


def test_binarize_mask_polarity_and_nearest_resize() -> None:
    mask = np.zeros((8, 8), np.uint8)
    mask[:4] = 200  # white top half: the hole in QD-IMD's polarity
    white = binarize_mask(mask, 16, mask_hole="white")
    assert white.shape == (16, 16) and set(np.unique(white)) == {0, 255}
    assert (white[:8] == 255).all() and (white[8:] == 0).all()
    black = binarize_mask(mask, 16, mask_hole="black")
    np.testing.assert_array_equal(black, 255 - white)


def test_prepare_masks_takes_first_n_sorted(tmp_path: Path) -> None:
    for name, value in [("b.png", 255), ("a.png", 0), ("c.png", 255)]:
        write_image(tmp_path / "src" / name, np.full((20, 20), value, np.uint8))
    out = prepare_masks(tmp_path / "src", tmp_path / "masks", n_masks=2, size=16)
    assert [p.name for p in out] == ["00000.png", "00001.png"]
    assert (read_image(out[0], cv2.IMREAD_GRAYSCALE) == 0).all()      # a.png: no hole
    assert (read_image(out[1], cv2.IMREAD_GRAYSCALE) == 255).all()    # b.png: all hole
    with pytest.raises(DataError, match="found 3 masks, but 4 are configured"):
        prepare_masks(tmp_path / "src", tmp_path / "m2", n_masks=4, size=16)


def test_overlay_zeroes_holes_only() -> None:
    image = np.full((4, 4, 3), 77, np.uint8)
    mask = np.zeros((4, 4), np.uint8)
    mask[1, 2] = 255
    out = overlay(image, mask)
    assert (out[1, 2] == 0).all()
    assert (out[mask == 0] == 77).all()


def test_overlay_masks_pairs_image_i_with_mask_i(manifest: Path) -> None:
    root = manifest.parent
    pairs = pd.read_csv(root / "pairs.csv", dtype={"id": str})
    assert len(pairs) == 12
    assert list(pairs["mask"]) == [f"masks/{i:05d}.png" for i in range(12)]
    for _, row in pairs.iterrows():
        image = read_image(root / row["image"])
        mask = read_image(root / row["mask"], cv2.IMREAD_GRAYSCALE)
        corrupted = read_image(root / row["corrupted"])
        assert (corrupted[mask == 255] == 0).all()
        np.testing.assert_array_equal(corrupted[mask == 0], image[mask == 0])
        # the pairs CSV rounds the ratio to 6 decimals: off by at most 5e-7 (+ float repr)
        assert row["hole_ratio"] == pytest.approx((mask == 255).mean(), abs=5e-7 + 1e-12)


def test_overlay_rejects_mask_of_other_size(tmp_path: Path) -> None:
    write_image(tmp_path / "img" / "a.jpg", np.zeros((16, 16, 3), np.uint8))
    write_image(tmp_path / "msk" / "00000.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(DataError, match="00000.png: mask is 8x8"):
        overlay_masks(tmp_path / "img", tmp_path / "msk", tmp_path / "out", tmp_path / "p.csv")
    assert not (tmp_path / "p.csv").exists() and not (tmp_path / "out").exists()


def test_split_sizes() -> None:
    assert split_sizes(30000, "paper", 3000) == {"train": 27000, "val": 0, "test": 3000}
    assert split_sizes(30000, "report") == {"train": 18000, "val": 6000, "test": 6000}
    with pytest.raises(ConfigError, match="split.test"):
        split_sizes(10, "paper", 10)
    with pytest.raises(ConfigError, match="split.scheme"):
        split_sizes(10, "other")
    assert split_sizes(2200, "paper", 200, val=200) == {"train": 1800, "val": 200, "test": 200}
    with pytest.raises(ConfigError, match="split.val: 5 validation and 5 test images leave none"):
        split_sizes(10, "paper", 5, val=5)


def test_a_validation_split_leaves_the_test_split_alone(manifest: Path, tmp_path: Path) -> None:
    """split.val under the paper scheme takes its images from the training images only: the test
    images are the same with and without it (a budget chosen on val never saw them)."""
    pairs = manifest.parent / "pairs.csv"
    plain = make_split(pairs, tmp_path / "m0.csv", scheme="paper", seed=3, test=4)
    held = make_split(pairs, tmp_path / "m1.csv", scheme="paper", seed=3, test=4, val=3)
    assert held["split"].value_counts().to_dict() == {"train": 5, "val": 3, "test": 4}
    test_ids = set(plain.loc[plain["split"] == "test", "id"])
    assert set(held.loc[held["split"] == "test", "id"]) == test_ids
    assert set(held.loc[held["split"] == "val", "id"]) <= set(plain.loc[plain["split"] == "train",
                                                                          "id"])


def test_split_is_seeded_and_deterministic(manifest: Path, tmp_path: Path) -> None:
    frame = read_manifest(manifest)
    assert list(frame.columns) == ["id", "image", "mask", "corrupted", "split", "hole_ratio"]
    assert frame["split"].value_counts().to_dict() == {"train": 8, "test": 4}
    assert all(Path(p).is_file() for p in frame["image"])
    pairs = manifest.parent / "pairs.csv"
    again = make_split(pairs, tmp_path / "m1.csv", scheme="paper", seed=0, test=4)
    assert list(again["split"]) == list(frame["split"])
    other = make_split(pairs, tmp_path / "m2.csv", scheme="paper", seed=1, test=4)
    assert list(other["split"]) != list(frame["split"])
    report = make_split(pairs, tmp_path / "m3.csv", scheme="report", seed=0)
    assert report["split"].value_counts().to_dict() == {"train": 8, "val": 2, "test": 2}
    # paths are rebased onto the new manifest's folder
    assert all(Path(p).is_file() for p in read_manifest(tmp_path / "m3.csv")["image"])
