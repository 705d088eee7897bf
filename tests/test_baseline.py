"""Baseline U-Net: the seed report's parameter counts, shapes, range and gradients."""

from __future__ import annotations

import pytest
import torch

from ndmha.models import build_model, count_gmac, count_parameters
from ndmha.models.baseline import BaselineUNet


def unet_gmac(size: int) -> float:
    """The U-Net's MACs derived from its shapes (the report's Keras summary): a 3x3 conv
    (k^2 c_in c_out h w MACs) per encoder block at 32, 64, 128, 256 channels and sizes s, s/2,
    s/4, s/8 (input: RGB + mask), the 512-channel bottleneck at s/16; per decoder step a 2x2
    stride-2 transposed conv (k^2 c_in c_out on its input's h w) and a 3x3 conv of the
    concatenation; a 1x1 conv to RGB. Biases, BatchNorm, pooling and activations are not MACs."""
    macs, channels, side = 0, 4, size
    for width in (32, 64, 128, 256):
        macs += 9 * channels * width * side * side
        channels, side = width, side // 2
    macs += 9 * 256 * 512 * side * side                      # the bottleneck, at size / 16
    channels = 512
    for width in (256, 128, 64, 32):
        macs += 4 * channels * width * side * side            # up: input h w, 2x2 taps
        side *= 2
        macs += 9 * (2 * width) * width * side * side         # the block on the concatenation
        channels = width
    macs += 32 * 3 * side * side
    return macs / 1e9


def test_gmac_derived_from_the_shapes() -> None:
    assert round(unet_gmac(256), 2) == 6.66  # the figure quoted beside the paper's table
    for size in (64, 256):
        assert count_gmac(BaselineUNet(), size) == pytest.approx(unet_gmac(size), rel=1e-12)


def test_parameter_counts_match_the_report() -> None:
    model = BaselineUNet()
    assert count_parameters(model) == 3_835_907
    running = sum(b.numel() for n, b in model.named_buffers() if "running" in n)
    assert running == 2_944
    assert count_parameters(model) + running == 3_838_851  # Keras "Total params"


def test_output_shape_range_and_gradients() -> None:
    torch.manual_seed(0)
    model = build_model("baseline")
    image, mask = torch.rand(2, 3, 32, 32), (torch.rand(2, 1, 32, 32) > 0.5).float()
    out = model(image, mask)
    assert out.shape == (2, 3, 32, 32)
    assert out.min() >= 0 and out.max() <= 1
    out.mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.down[0][0].weight.grad.abs().sum() > 0  # reaches the first layer


def test_mask_channel_changes_the_output() -> None:
    torch.manual_seed(0)
    model = BaselineUNet().eval()
    image = torch.rand(1, 3, 32, 32)
    assert not torch.allclose(model(image, torch.zeros(1, 1, 32, 32)),
                              model(image, torch.ones(1, 1, 32, 32)))


def test_gmac_of_a_known_conv() -> None:
    class OneConv(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(4, 8, 3, padding=1, bias=False)

        def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return self.conv(torch.cat([image, mask], 1))

    # 8 output channels x 16x16 pixels x (4 x 3 x 3) MACs each
    assert count_gmac(OneConv(), 16) == 8 * 16 * 16 * 36 / 1e9
