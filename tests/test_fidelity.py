"""LPIPS and FID / KID: known values with locally saved (random) weights, n/a without weights."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch

from ndmha.data.demo import draw_face
from ndmha.fidelity import (
    LPIPSMetric,
    fid_kid,
    inception_features,
    lpips_metric,
)
from ndmha.io import write_image


def test_lpips_is_zero_for_identical_images(alexnet_weights: Path) -> None:
    metric = LPIPSMetric(alexnet_weights, net="alex")
    x = torch.rand(3, 3, 64, 64)
    same = metric(x, x)
    assert same.shape == (3,) and (same == 0).all()  # the same input, the same features: exact
    different = metric(x, torch.rand(3, 3, 64, 64))
    assert (different > 0).all()
    noisy = metric(x, (x + 0.02 * torch.randn_like(x)).clamp(0, 1))
    assert (noisy < different).all()  # closer images, smaller distance


def test_lpips_loads_the_backbone_from_the_local_checkpoint(alexnet_weights: Path) -> None:
    metric = LPIPSMetric(alexnet_weights)
    saved = torch.load(alexnet_weights, weights_only=True)
    assert torch.equal(metric.model.net.slice1[0].weight, saved["features.0.weight"])
    assert torch.equal(getattr(metric.model.net.slice5, "10").weight, saved["features.10.weight"])


def test_missing_weights_read_na_with_the_path(tmp_path: Path) -> None:
    result = lpips_metric({"net": "alex", "weights": str(tmp_path / "alexnet.pth")})
    assert result == (f"n/a (weights not found: alexnet-owt-7be5be79.pth not found; searched "
                      f"{tmp_path / 'alexnet.pth'})")
    hub = Path(os.environ["TORCH_HOME"]) / "hub" / "checkpoints"
    assert str(hub / "alexnet-owt-7be5be79.pth") in lpips_metric({"weights": ""})
    assert str(hub / "vgg16-397923af.pth") in lpips_metric({"net": "vgg", "weights": ""})


def test_a_metric_switched_off_reads_off(alexnet_weights: Path) -> None:
    assert lpips_metric({"net": "alex", "weights": False}) == "off"
    assert lpips_metric({"net": "alex", "weights": "off"}) == "off"


def test_stand_in_weights_that_are_not_the_published_ones_read_na(alexnet_weights: Path) -> None:
    result = lpips_metric({"net": "alex", "weights": str(alexnet_weights)})
    assert result.startswith("n/a (weights not found: ") and "is not alexnet-owt-" in result


def _faces(folder: Path, seed: int, n: int) -> list[Path]:
    paths = []
    for i in range(n):
        paths.append(folder / f"{seed}_{i}.png")
        write_image(paths[-1], draw_face(64, seed, i))
    return paths


def _noise(folder: Path, n: int) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        paths.append(folder / f"noise_{i}.png")
        write_image(paths[-1], rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    return paths


def test_fid_kid_plumbing(inception_weights: Path, tmp_path: Path) -> None:
    faces = inception_features(_faces(tmp_path, 0, 6), inception_weights)
    assert faces.shape == (6, 2048)
    same = fid_kid(faces, faces)
    # FID of a set with itself is 0 in exact arithmetic; what is left is scipy's sqrtm of a rank-5
    # 2048 x 2048 covariance, whose error scales with its trace (tr = 2 * the spread of random
    # Inception features, ~1e2 here): 1e-3 is 1e-5 of it. KID is unbiased: near 0, may be < 0.
    assert abs(same["fid"]) < 1e-3
    other = fid_kid(faces, inception_features(_noise(tmp_path, 6), inception_weights))
    assert other["fid"] > 100 * max(abs(same["fid"]), 1e-6) and other["kid"] > same["kid"]
    assert set(other) == {"fid", "kid", "kid_std"} and all(math.isfinite(v) for v in other.values())
    assert all(math.isnan(v) for v in fid_kid(faces[:1], faces[:1]).values())


def test_fid_kid_from_features_equal_torch_fidelitys_own_call(inception_weights: Path,
                                                              tmp_path: Path) -> None:
    import torch_fidelity

    from ndmha.fidelity import ImageFiles

    faces, noise = _faces(tmp_path, 0, 5), _noise(tmp_path, 5)
    ours = fid_kid(inception_features(faces, inception_weights),
                   inception_features(noise, inception_weights))
    theirs = torch_fidelity.calculate_metrics(
        input1=ImageFiles(faces), input2=ImageFiles(noise), fid=True, kid=True,
        kid_subset_size=5, feature_extractor_weights_path=str(inception_weights), cuda=False,
        batch_size=32, verbose=False, cache=False, save_cpu_ram=True)
    assert ours == {"fid": theirs["frechet_inception_distance"],
                    "kid": theirs["kernel_inception_distance_mean"],
                    "kid_std": theirs["kernel_inception_distance_std"]}


def test_fid_two_ways_differ_by_the_resize(inception_weights: Path, tmp_path: Path) -> None:
    """torch-fidelity's FID and clean-fid's (``clean_features``): on 299 px images, where both
    resizes are the identity, their features differ only by the input scaling (x - 128) / 128
    against 2x - 1 and the two ports of one network; on 64 px images the resize to 299 differs
    too (TF1 bilinear on uint8 against PIL bicubic on floats), and so do the features, by more.
    Measured on the tests' random stand-in: 0.7 % at 299 px, 6.8 % at 64 px (relative to the
    largest feature); the factor 3 asked for below leaves room on either side. A set against
    itself scores 0 both ways."""
    import cv2

    from ndmha.fidelity import clean_features, clean_fid

    small = _faces(tmp_path, 0, 4)
    large = []
    for path in small:
        large.append(path.with_name(f"large_{path.name}"))
        write_image(large[-1], cv2.resize(cv2.imread(str(path)), (299, 299),
                                          interpolation=cv2.INTER_AREA))

    def gap(paths: list[Path]) -> float:
        fidelity = inception_features(paths, inception_weights).double()
        clean = clean_features(paths, inception_weights)
        assert clean.shape == fidelity.shape == (len(paths), 2048)
        return float((clean - fidelity).abs().max() / fidelity.abs().max())

    at_299, at_64 = gap(large), gap(small)
    assert at_299 < 0.02 and at_64 > 3 * at_299, (at_299, at_64)
    faces = clean_features(small, inception_weights)
    assert abs(clean_fid(faces, faces)) < 1e-3  # sqrtm's error, as in test_fid_kid_plumbing
    assert clean_fid(faces, clean_features(_noise(tmp_path, 4), inception_weights)) > 0
    assert math.isnan(clean_fid(faces[:1], faces[:1]))
