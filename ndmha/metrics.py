"""Image-quality metrics per image: PSNR, SSIM (torchmetrics, data_range = 1.0) and L1.

Every function takes float tensors (N, C, H, W) in [0, 1] and returns one value per image.
"""

from __future__ import annotations

import torch
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)

DATA_RANGE = 1.0


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB, ``data_range`` 1.0, per image."""
    return peak_signal_noise_ratio(pred, target, data_range=DATA_RANGE, reduction="none",
                                   dim=(1, 2, 3))


def ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Structural similarity (Gaussian 11x11 window, sigma 1.5), ``data_range`` 1.0, per image."""
    return structural_similarity_index_measure(pred, target, data_range=DATA_RANGE,
                                               reduction="none")


def l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error per image."""
    return (pred - target).abs().flatten(1).mean(dim=1)


def composite(pred: torch.Tensor, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The prediction inside the holes (``mask`` = 1), the known input elsewhere."""
    return mask * pred + (1 - mask) * image


def image_metrics(pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """PSNR, SSIM and L1 per image, as float64 on the CPU."""
    pred, target = pred.detach().float(), target.detach().float()
    return {name: fn(pred, target).double().cpu()
            for name, fn in (("psnr", psnr), ("ssim", ssim), ("l1", l1))}
