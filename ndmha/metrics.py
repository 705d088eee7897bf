"""Image-quality metrics per image: PSNR, SSIM (torchmetrics, data_range = 1.0) and L1.

Every function takes float tensors (N, C, H, W) in [0, 1] and returns one value per image.
:func:`image_metrics` computes them in float64, so that they equal the reference
implementations to rounding (scikit-image's SSIM, tested) on every machine.
"""

from __future__ import annotations

import torch
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)

DATA_RANGE = 1.0
SSIM_WINDOW = 11          # Gaussian window of Wang et al. (2004), 11 x 11
SSIM_SIGMA = 1.5
SSIM_RADIUS = SSIM_WINDOW // 2


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB, ``data_range`` 1.0, per image."""
    return peak_signal_noise_ratio(pred, target, data_range=DATA_RANGE, reduction="none",
                                   dim=(1, 2, 3))


def ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Structural similarity as Wang et al. define it, per image: Gaussian 11x11 window,
    sigma 1.5, K1 0.01, K2 0.03, ``data_range`` 1.0, the SSIM map averaged over the *valid*
    region (the pixels whose whole window lies inside the image) and over the channels.

    That is what ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=1)`` and TensorFlow's ``tf.image.ssim`` (the seed
    report's code) compute. torchmetrics' own mean pads the image by reflection and includes the
    border (5 px on every side: 29 % of a 64 px image); its full SSIM map, cropped by the window
    radius, is the reference definition.
    """
    _, full = structural_similarity_index_measure(
        pred, target, gaussian_kernel=True, sigma=SSIM_SIGMA, kernel_size=SSIM_WINDOW,
        data_range=DATA_RANGE, reduction="none", return_full_image=True)
    r = SSIM_RADIUS
    return full[..., r:-r, r:-r].mean(dim=(1, 2, 3))


def l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error per image."""
    return (pred - target).abs().flatten(1).mean(dim=1)


def composite(pred: torch.Tensor, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The prediction inside the holes (``mask`` = 1), the known input elsewhere."""
    return mask * pred + (1 - mask) * image


def image_metrics(pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """PSNR, SSIM and L1 per image, computed in float64, on the CPU."""
    pred, target = pred.detach().double(), target.detach().double()
    return {name: fn(pred, target).cpu()
            for name, fn in (("psnr", psnr), ("ssim", ssim), ("l1", l1))}
