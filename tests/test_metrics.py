"""Metrics on known values."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from ndmha.metrics import composite, image_metrics, l1, psnr, ssim


def test_identical_images() -> None:
    x = torch.rand(3, 3, 32, 32)
    assert torch.isinf(psnr(x, x)).all()
    assert (ssim(x, x) == 1).all()  # numerator and denominator are the same float sums
    assert (l1(x, x) == 0).all()


def test_known_error_gives_known_psnr_and_l1() -> None:
    target = torch.full((2, 3, 16, 16), 0.5, dtype=torch.float64)
    sign = torch.ones_like(target)
    sign[..., ::2] = -1
    pred = target + 0.05 * sign  # MSE = 0.0025, |error| = 0.05 (float64: 0.05 to 1e-17)
    expected = 10 * math.log10(1 / 0.0025)  # 26.0206 dB
    # torchmetrics divides by log(10) computed in float32 even for float64 input (a relative
    # error of 4.5e-8, measured 4.5e-8 here); any other error would be 1e-15
    assert torch.allclose(psnr(pred, target), torch.full((2,), expected, dtype=torch.float64),
                          rtol=1e-7, atol=0)
    assert torch.allclose(l1(pred, target), torch.full((2,), 0.05, dtype=torch.float64),
                          rtol=0, atol=1e-15)


def test_gaussian_noise_psnr_follows_sigma() -> None:
    torch.manual_seed(0)
    target = torch.full((1, 3, 128, 128), 0.5)
    pred = target + 0.1 * torch.randn_like(target)  # stays inside [0, 1] almost surely
    # sigma 0.1 gives MSE 0.01, 20 dB in expectation; the MSE of 49,152 samples has a relative sd
    # of sqrt(2 / 49152) = 0.0064, i.e. 0.028 dB of PSNR: 0.1 dB is 3.6 sd
    assert abs(float(psnr(pred, target)) - 20.0) < 0.1


def test_ssim_drops_with_noise_and_is_per_image() -> None:
    torch.manual_seed(0)
    target = torch.rand(2, 3, 32, 32)
    pred = target.clone()
    pred[1] = (pred[1] + 0.3 * torch.randn_like(pred[1])).clamp(0, 1)
    values = ssim(pred, target)
    assert values.shape == (2,)
    # an image with itself: SSIM's numerator and denominator are the same products, so 1 up to
    # rounding; noise of sd 0.3 measured 0.66-0.71 over 20 seeds, well under 0.8
    assert abs(float(values[0]) - 1.0) < 1e-6 and values[1] < 0.8


def test_composite_and_image_metrics() -> None:
    image = torch.zeros(1, 3, 4, 4)
    pred = torch.ones(1, 3, 4, 4)
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., 0, 0] = 1
    out = composite(pred, image, mask)
    assert out.sum() == 3 and (out[..., 0, 0] == 1).all()
    big = torch.rand(2, 3, 16, 16)
    values = image_metrics(big, big)
    assert set(values) == {"psnr", "ssim", "l1"} and values["l1"].dtype == torch.float64
    assert values["l1"].shape == (2,) and (values["l1"] == 0).all()


def _pairs() -> list[tuple[np.ndarray, np.ndarray]]:
    """Image pairs of several kinds and sizes (uint8 RGB, as the metrics read them from disk)."""
    from ndmha.data.demo import draw_face, draw_mask

    rng = np.random.default_rng(0)
    face = draw_face(64, 0, 5)
    blurred = cv2.GaussianBlur(face, (5, 5), 1.2)
    holes = draw_mask(64, 0, 5) > 0
    inpainted = np.where(holes[..., None], blurred[::-1], face)  # a poor fill inside the holes
    noisy = np.clip(face + rng.normal(0, 20, face.shape), 0, 255).astype(np.uint8)
    other = draw_face(48, 1, 7)[:, :40]  # not square
    return [(face, blurred), (face, inpainted), (face, noisy),
            (other, np.clip(other.astype(int) + 30, 0, 255).astype(np.uint8)),
            (rng.integers(0, 255, (32, 32, 3), dtype=np.uint8),
             rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))]


def test_ssim_is_the_reference_definition() -> None:
    """SSIM as scikit-image (and TensorFlow's tf.image.ssim) compute it: Gaussian 11x11,
    sigma 1.5, the valid region only. Both run in float64: they may differ by summation order
    only (measured: at most 7e-15); torchmetrics' own border-including mean differs by up to
    0.05 on the demo's 64 px images."""
    from skimage.metrics import structural_similarity

    from ndmha.data.dataset import to_tensor

    for a, b in _pairs():
        a, b = to_tensor(a).double(), to_tensor(b).double()  # the same pixels for both
        ours = float(image_metrics(a[None], b[None])["ssim"][0])
        reference = structural_similarity(
            a.permute(1, 2, 0).numpy(), b.permute(1, 2, 0).numpy(), gaussian_weights=True,
            sigma=1.5, use_sample_covariance=False, data_range=1.0, channel_axis=2)
        assert abs(ours - reference) < 1e-12, (ours, reference)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_psnr_is_torchmetrics_bitwise(dtype: torch.dtype) -> None:
    """Our PSNR is torchmetrics' arithmetic op for op (ndmha.metrics.psnr says why it is written
    out): equal bitwise, so scores before and after the change compare exactly."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    g = torch.Generator().manual_seed(0)
    target = torch.rand(5, 3, 24, 20, generator=g, dtype=dtype)
    pred = (target + 0.1 * torch.randn(5, 3, 24, 20, generator=g, dtype=dtype)).clamp(0, 1)
    pred[0] = target[0]  # an exact prediction: infinite PSNR in both
    theirs = peak_signal_noise_ratio(pred, target, data_range=1.0, reduction="none",
                                     dim=(1, 2, 3))
    ours = psnr(pred, target)
    assert ours.dtype == theirs.dtype and torch.equal(ours, theirs)
