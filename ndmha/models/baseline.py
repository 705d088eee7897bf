"""Baseline U-Net of the cs512 seed report, ported from its Keras definition.

Encoder: four blocks of one 3x3 conv + BatchNorm + ReLU (32/64/128/256 filters), each followed by a
2x2 max-pool; a 512-filter bottleneck block; decoder: 2x2 stride-2 transposed conv (256/128/64/32),
concatenation with the matching encoder output, one 3x3 conv + BatchNorm + ReLU; a final 1x1 conv to
RGB with a sigmoid. Input: corrupted RGB + hole mask (4 channels), values in [0, 1].

With a 4-channel input this gives the report's Keras counts exactly: 3,835,907 trainable parameters
and 2,944 BatchNorm running-statistic values.
"""

from __future__ import annotations

import torch
from torch import nn

ENCODER_WIDTHS = (32, 64, 128, 256)
BOTTLENECK_WIDTH = 512
IN_CHANNELS, OUT_CHANNELS = 4, 3  # corrupted RGB + mask -> RGB


class ConvBlock(nn.Sequential):
    """One 3x3 convolution + BatchNorm + ReLU (the report's "convolution block")."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class UpBlock(nn.Module):
    """2x2 stride-2 transposed convolution, skip concatenation, then a convolution block."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)
        self.conv = ConvBlock(2 * out_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([self.up(x), skip], dim=1))


class BaselineUNet(nn.Module):
    """The seed report's U-Net baseline: (corrupted RGB, mask) -> sigmoid RGB."""

    #: spatial size must be a multiple of this (four 2x2 poolings)
    size_multiple = 16

    def __init__(self) -> None:
        super().__init__()
        widths = (IN_CHANNELS, *ENCODER_WIDTHS)
        self.down = nn.ModuleList(ConvBlock(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = ConvBlock(ENCODER_WIDTHS[-1], BOTTLENECK_WIDTH)
        up_widths = (BOTTLENECK_WIDTH, *reversed(ENCODER_WIDTHS))
        self.up = nn.ModuleList(UpBlock(a, b) for a, b in zip(up_widths[:-1], up_widths[1:]))
        self.head = nn.Conv2d(ENCODER_WIDTHS[0], OUT_CHANNELS, kernel_size=1)

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``image``: corrupted RGB (N, 3, H, W); ``mask``: 1 in holes (N, 1, H, W)."""
        x = torch.cat([image, mask], dim=1)
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for block, skip in zip(self.up, reversed(skips)):
            x = block(x, skip)
        return torch.sigmoid(self.head(x))
