"""Spectral-normalised PatchGAN discriminator (SN-PatchGAN, as in DeepFill v2 / gated convolution).

The paper names an adversarial term but not its discriminator; this is the standard choice for
free-form inpainting (docs/architecture.md). It scores overlapping patches of (RGB, mask), so the
generator is judged locally everywhere, and spectral norm keeps it 1-Lipschitz per layer, which is
what makes the hinge loss train stably with the paper's learning rate.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

WIDTHS = (32, 64, 128, 256)


class PatchDiscriminator(nn.Module):
    """Four 4x4 stride-2 convs, then a 3x3 stride-1 conv to one score per patch, spectral norm,
    LeakyReLU(0.2). Input: RGB + hole mask; output: (N, 1, H/16, W/16) patch scores."""

    def __init__(self, in_channels: int = 4, widths: tuple[int, ...] = WIDTHS) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for width in widths:
            layers += [spectral_norm(nn.Conv2d(channels, width, 4, stride=2, padding=1)),
                       nn.LeakyReLU(0.2)]
            channels = width
        layers.append(spectral_norm(nn.Conv2d(channels, 1, 3, padding=1)))
        self.net = nn.Sequential(*layers)

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([image, mask], dim=1))
