"""The training dataset: fixed pairs, fresh masks per sample and epoch, splits and subsets."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from ndmha.data.dataset import EpochSampler, InpaintingDataset, augment_mask, to_tensor
from ndmha.data.split import read_manifest
from ndmha.errors import ConfigError
from ndmha.io import read_image


def test_fixed_pairs_are_the_manifests(manifest: Path) -> None:
    data = InpaintingDataset(manifest, "train")
    frame = read_manifest(manifest, "train")
    item = data[3]
    assert item["id"] == frame["id"][3]
    assert torch.equal(item["image"], to_tensor(read_image(frame["corrupted"][3])))
    assert torch.equal(data[3 + len(data)]["mask"], item["mask"])  # the epoch changes nothing


def test_random_masks_are_fresh_per_epoch_and_reproducible(manifest: Path) -> None:
    data = InpaintingDataset(manifest, "train", masks="random", seed=5)
    n = len(data)
    first = [data[i]["mask"] for i in range(n)]
    again = [InpaintingDataset(manifest, "train", masks="random", seed=5)[i]["mask"]
             for i in range(n)]
    later = [data[n + i]["mask"] for i in range(n)]  # epoch 1
    assert all(torch.equal(a, b) for a, b in zip(first, again))      # (seed, epoch, index) only
    assert sum(not torch.equal(a, b) for a, b in zip(first, later)) >= n // 2
    item = data[2 * n + 1]
    target, mask = item["target"], item["mask"]
    # the corrupted input is the target with the holes set to 0 (cv2.bitwise_and, as the overlay)
    assert torch.equal(item["image"], target * (1 - mask))
    assert set(mask.unique().tolist()) <= {0.0, 1.0}


def test_random_masks_come_from_the_training_rows(manifest: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import ndmha.data.dataset as dataset

    monkeypatch.setattr(dataset, "augment_mask", lambda mask, rng: mask)  # no flips or dilation
    data = InpaintingDataset(manifest, "train", masks="random", seed=1)
    pool = {read_image(p, cv2.IMREAD_GRAYSCALE).tobytes() for p in data.frame["mask"]}
    test = {read_image(p, cv2.IMREAD_GRAYSCALE).tobytes()
            for p in read_manifest(manifest, "test")["mask"]}
    drawn = {(data[i]["mask"][0].numpy() * 255).astype(np.uint8).tobytes()
             for i in range(5 * len(data))}
    assert drawn <= pool and not drawn & (test - pool) and len(drawn) > 1


def test_augment_mask_keeps_a_binary_square_mask_and_can_dilate() -> None:
    rng = np.random.default_rng(0)
    mask = np.zeros((16, 16), np.uint8)
    mask[4:6, 3:12] = 255
    outs = [augment_mask(mask, rng) for _ in range(40)]
    assert all(o.shape == (16, 16) and set(np.unique(o)) <= {0, 255} for o in outs)
    assert max(int(o.sum()) for o in outs) > mask.sum()  # some dilated
    assert any(not np.array_equal(o, mask) for o in outs if o.sum() == mask.sum())  # some moved


def test_splits_subsets_and_the_epoch_tag(manifest: Path) -> None:
    both = InpaintingDataset(manifest, ["train", "test"])
    assert len(both) == 12 and both.split == "train+test"
    assert len(InpaintingDataset(manifest, "train", max_images=3)) == 3
    with pytest.raises(ConfigError, match="train.masks"):
        InpaintingDataset(manifest, "train", masks="sometimes")
    data = InpaintingDataset(manifest, "train")
    sampler = EpochSampler(data, num_replicas=1, rank=0, shuffle=True, seed=0)
    sampler.set_epoch(3)
    indices = list(sampler)
    assert sorted(i - 3 * len(data) for i in indices) == list(range(len(data)))
