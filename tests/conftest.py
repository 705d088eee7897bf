"""Shared fixtures: a tiny prepared dataset built with the package's own data functions."""

from __future__ import annotations

from pathlib import Path

import pytest

from ndmha.data.demo import make_demo_dataset
from ndmha.data.prepare import convert_images, overlay_masks, prepare_masks
from ndmha.data.split import make_split

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def demo_source(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """12 demo faces (48 px) and 12 masks (48 px) as PNG."""
    root = tmp_path_factory.mktemp("demo_source")
    make_demo_dataset(root / "images", root / "masks", n_images=12, n_masks=12, size=48,
                      mask_size=48, seed=3)
    return {"images": root / "images", "masks": root / "masks"}


@pytest.fixture(scope="session")
def manifest(tmp_path_factory: pytest.TempPathFactory, demo_source: dict[str, Path]) -> Path:
    """The full preparation chain on the demo source at 32 px: returns the split manifest."""
    root = tmp_path_factory.mktemp("prepared")
    convert_images(demo_source["images"], root / "images", n_images=12, size=32)
    prepare_masks(demo_source["masks"], root / "masks", n_masks=12, size=32)
    overlay_masks(root / "images", root / "masks", root / "corrupted", root / "pairs.csv")
    make_split(root / "pairs.csv", root / "manifest.csv", scheme="paper", seed=0, test=4)
    return root / "manifest.csv"
