"""The embedded demo dataset: deterministic, varied faces and QD-IMD-like masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ndmha.data.demo import draw_face, draw_mask, make_demo_dataset
from ndmha.io import read_image


def test_faces_are_deterministic_and_differ_between_indices() -> None:
    a, b = draw_face(64, seed=0, index=5), draw_face(64, seed=0, index=5)
    assert a.shape == (64, 64, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    others = [draw_face(64, seed=0, index=i) for i in range(6)]
    diffs = [np.abs(others[0].astype(int) - o.astype(int)).mean() for o in others[1:]]
    # two renders that differed only in the sensor noise (sd 2 grey levels) would differ by
    # 2 * 2 / sqrt(pi) = 2.3 on average; different faces measured 62-91
    assert min(diffs) > 5
    assert not np.array_equal(draw_face(64, seed=1, index=5), a)


def test_faces_have_a_skin_region_in_the_centre() -> None:
    shares = []
    for i in range(20):
        centre = draw_face(96, seed=0, index=i)[30:66, 30:66] // 24  # coarse colour bins
        _, counts = np.unique(centre.reshape(-1, 3), axis=0, return_counts=True)
        shares.append(counts.max() / counts.sum())
    # one colour (the skin, under a lighting gradient) dominates the middle of every face:
    # measured min 0.25, median 0.57 over these 20 faces
    assert min(shares) > 0.2 and np.median(shares) > 0.45


def test_masks_are_binary_with_hole_ratio_in_range() -> None:
    ratios = []
    for i in range(40):
        mask = draw_mask(64, seed=0, index=i, ratio_range=(0.05, 0.6))
        assert set(np.unique(mask)) <= {0, 255}
        ratios.append((mask == 255).mean())
    ratios = np.array(ratios)
    # strokes stop once the target (<= 0.6) is reached, so only the last one overshoots: at most
    # 0.08 of the side thick and 11 x 0.12 of it long, 0.106 of the image: under 0.75
    # (measured 0.058-0.611 over 400 masks)
    assert ratios.min() >= 0.05 and ratios.max() <= 0.75
    assert ratios.max() - ratios.min() > 0.3  # spread over the range, not one size


def test_make_demo_dataset_writes_pngs(tmp_path: Path) -> None:
    make_demo_dataset(tmp_path / "img", tmp_path / "msk", n_images=3, n_masks=4, size=32,
                      mask_size=40, seed=0, threads=2)
    images = sorted((tmp_path / "img").iterdir())
    masks = sorted((tmp_path / "msk").iterdir())
    assert [p.name for p in images] == ["000000.png", "000001.png", "000002.png"]
    assert len(masks) == 4
    assert read_image(images[0]).shape == (32, 32, 3)
    np.testing.assert_array_equal(read_image(images[1]), draw_face(32, 0, 1))
    assert read_image(masks[0]).shape[:2] == (40, 40)
