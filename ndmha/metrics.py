"""Image-quality metrics per image: PSNR (as torchmetrics computes it), SSIM (the reference
definition) and L1, ``data_range`` 1.0.

Every function takes float tensors (N, C, H, W) in [0, 1] and returns one value per image.
:func:`image_metrics` computes them in float64, so that they equal the reference
implementations to rounding (scikit-image's SSIM, tested) on every machine.
"""

from __future__ import annotations

import math

import torch

DATA_RANGE = 1.0
SSIM_WINDOW = 11          # Gaussian window of Wang et al. (2004), 11 x 11
SSIM_SIGMA = 1.5
SSIM_RADIUS = SSIM_WINDOW // 2


#: dB per neper as torchmetrics' PSNR computes it (10 / ln 10 in float32): the scores equal the
#: earlier runs' torchmetrics scores bitwise (``test_psnr_is_torchmetrics_bitwise``)
DB_PER_NEPER = float(10 / torch.log(torch.tensor(10.0)))


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB, ``data_range`` 1.0, per image: torchmetrics'
    ``peak_signal_noise_ratio(..., reduction="none", dim=(1, 2, 3))`` op for op.

    Written out rather than called: importing torchmetrics imports torchvision's models and ops,
    torch._dynamo, scipy.signal and its audio package, about 6 of the 9 s it takes a scoring job
    to import ``ndmha.evaluate`` on 2 AMD EPYC cores (``python -X importtime``), in each of the
    demo's ten predict and metrics jobs, for one line of arithmetic."""
    diff = pred - target
    sum_squared_error = torch.sum(diff * diff, dim=(1, 2, 3))
    mse = sum_squared_error / target[0].numel()
    return (2 * math.log(DATA_RANGE) - torch.log(mse)) * DB_PER_NEPER


def _gaussian() -> list[float]:
    """The normalised 1-D Gaussian window as Python floats (the weights of the shifted slices;
    computed on the host, so that scoring on a GPU never reads a tensor back)."""
    g = [math.exp(-(i - SSIM_RADIUS) ** 2 / (2 * SSIM_SIGMA ** 2)) for i in range(SSIM_WINDOW)]
    return [v / math.fsum(g) for v in g]


def _valid_blur(x: torch.Tensor, g: list[float]) -> torch.Tensor:
    """The separable Gaussian of ``x`` over its last two axes, valid region only (each output
    pixel's whole window inside): 11 shifted, weighted slices per axis, accumulated in place in a
    fixed order."""
    n = len(g)
    w = x.shape[-1] - n + 1
    rows = x[..., 0:w] * g[0]
    for k in range(1, n):
        rows.add_(x[..., k:k + w], alpha=g[k])
    h = rows.shape[-2] - n + 1
    out = rows[..., 0:h, :] * g[0]
    for k in range(1, n):
        out.add_(rows[..., k:k + h, :], alpha=g[k])
    return out


def ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Structural similarity as Wang et al. define it, per image: Gaussian 11x11 window,
    sigma 1.5, K1 0.01, K2 0.03, ``data_range`` 1.0, population (co)variances, the SSIM map
    averaged over the *valid* region (the pixels whose whole window lies inside the image) and
    over the channels.

    That is what ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=1)`` and TensorFlow's ``tf.image.ssim`` (the seed
    report's code) compute, and what a test pins it to. Written here rather than taken from
    torchmetrics: its mean pads by reflection and includes the border (5 px on every side, 29 %
    of a 64 px image), and its full map in float64 unfolds every 11x11 window on a CPU (330 MB per
    256 px image). This separable form costs a few copies of the image, on any device.
    """
    g = _gaussian()
    mp, mt, pp, tt, pt = _valid_blur(torch.stack([pred, target, pred * pred, target * target,
                                                  pred * target]), g)
    c1, c2 = (0.01 * DATA_RANGE) ** 2, (0.03 * DATA_RANGE) ** 2
    var_p, var_t, cov = pp - mp * mp, tt - mt * mt, pt - mp * mt
    ssim_map = ((2 * mp * mt + c1) * (2 * cov + c2)
                / ((mp * mp + mt * mt + c1) * (var_p + var_t + c2)))
    return ssim_map.mean(dim=(1, 2, 3))


def l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error per image."""
    return (pred - target).abs().flatten(1).mean(dim=1)


def composite(pred: torch.Tensor, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The prediction inside the holes (``mask`` = 1), the known input elsewhere."""
    return mask * pred + (1 - mask) * image


def image_metrics(pred: torch.Tensor, target: torch.Tensor, dtype: torch.dtype = torch.float64,
                  to_cpu: bool = True) -> dict[str, torch.Tensor]:
    """PSNR, SSIM and L1 per image, computed in ``dtype`` (float64: the reference values, what
    the test metrics use) on the inputs' device, returned on the CPU unless ``to_cpu`` is off
    (the training loop's running means stay on the device: no host sync per step)."""
    pred, target = pred.detach().to(dtype), target.detach().to(dtype)
    return {name: fn(pred, target).cpu() if to_cpu else fn(pred, target)
            for name, fn in (("psnr", psnr), ("ssim", ssim), ("l1", l1))}
