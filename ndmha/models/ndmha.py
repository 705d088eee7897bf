"""The NDMHA generator (Phutke & Murala, WACV 2023), as we read the paper: a coarse-to-fine
inpainting network.

Coarse stage: an encoder / decoder of gated convolutions and gated transposed convolutions with
LeakyReLU, dilated gated convolutions in its bottleneck, predicting a coarse image.
Fine stage: a second gated-conv encoder reads the coarse result pasted into the holes (the coarse
output gives it context); its decoder meets the encoder features at every scale through a Nested
Deformable Multi-Head Attention Layer (NDMHAL), whose output and packed context are fused by a
gated conv. Input: corrupted RGB + hole mask in [0, 1]; output: RGB in [0, 1].

Widths, depths and heads are our choice (the paper gives none) to meet its figures: about 4.1 M
parameters and at most 15.01 GMAC at 256 x 256; see docs/architecture.md. Every constructor
argument is an option of the ``ndmha`` architecture in config (``experiments.<name>.options``):
the ablations (``deformable``, ``nested``, ``window``, ``coarse_stage``) and the training-speed
choices (``init``, ``output``) measured in docs/architecture.md.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from ndmha.models.layers import NDMHAL, GatedConv2d, GatedDeconv2d, kaiming_gated_init

WIDTHS = (16, 32, 64, 144)       # channels at 1, 1/2, 1/4, 1/8 of the input size
DILATIONS = (2, 4, 8, 16)        # coarse bottleneck (the receptive field covers a 256 px face)
HEADS = (1, 2, 4, 8)             # NDMHAL heads per scale (fine to coarse: 1 ... 8)
FINE_BOTTLENECK = 2              # NDMHALs at the fine stage's lowest scale (self-attention)
OUTPUTS = {"sigmoid": torch.sigmoid, "linear": nn.Identity()}


class GatedEncoder(nn.Module):
    """Gated-conv encoder: a gated conv at full size (``stem_kernel`` x ``stem_kernel``), then
    one stride-2 gated conv per scale. Returns the features of every scale, finest first."""

    def __init__(self, in_channels: int, widths: Sequence[int], stem_kernel: int = 5) -> None:
        super().__init__()
        self.stem = GatedConv2d(in_channels, widths[0], kernel_size=stem_kernel)
        self.down = nn.ModuleList(GatedConv2d(a, b, stride=2)
                                  for a, b in zip(widths[:-1], widths[1:]))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = [self.stem(x)]
        for layer in self.down:
            features.append(layer(features[-1]))
        return features


def decode(y: torch.Tensor, features: list[torch.Tensor], up: nn.ModuleList, fuse: nn.ModuleList,
           merge: Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """The decoder of every stage here and in the release, coarsest scale first: at scale ``i``
    the gated deconv ``up[i]`` doubles the size, ``merge(i, upsampled, skip)`` meets the encoder
    feature of that scale (concatenation, or an NDMHAL's output and packed context), and the
    gated conv ``fuse[i]`` fuses them."""
    for i, (up_i, fuse_i, skip) in enumerate(zip(up, fuse, features[-2::-1])):
        y = fuse_i(merge(i, up_i(y), skip))
    return y


def concat(i: int, y: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    """The coarse stage's merge: the upsampled feature, then the encoder's."""
    return torch.cat([y, skip], dim=1)


class CoarseStage(nn.Module):
    """Coarse network: gated encoder, dilated gated bottleneck, gated decoder with skips."""

    def __init__(self, in_channels: int, widths: Sequence[int], dilations: Sequence[int],
                 output: str) -> None:
        super().__init__()
        self.encoder = GatedEncoder(in_channels, widths)
        self.bottleneck = nn.Sequential(*(GatedConv2d(widths[-1], widths[-1], dilation=d)
                                          for d in dilations))
        self.up = nn.ModuleList(GatedDeconv2d(a, b) for a, b in zip(widths[:0:-1], widths[-2::-1]))
        self.fuse = nn.ModuleList(GatedConv2d(2 * b, b) for b in widths[-2::-1])
        self.head = nn.Conv2d(widths[0], 3, 3, padding=1)
        self.output = OUTPUTS[output]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.encoder(x)
        y = decode(self.bottleneck(features[-1]), features, self.up, self.fuse, concat)
        return self.output(self.head(y))


class FineStage(nn.Module):
    """Fine network: gated encoder, NDMHAL self-attention bottleneck, and a decoder whose every
    scale attends to the matching encoder features through an NDMHAL."""

    def __init__(self, in_channels: int, widths: Sequence[int], heads: Sequence[int], depth: int,
                 output: str, **layer: object) -> None:
        super().__init__()
        self.encoder = GatedEncoder(in_channels, widths)
        self.bottleneck = nn.ModuleList(NDMHAL(widths[-1], heads[-1], **layer)
                                        for _ in range(depth))
        self.up = nn.ModuleList(GatedDeconv2d(a, b) for a, b in zip(widths[:0:-1], widths[-2::-1]))
        self.attend = nn.ModuleList(NDMHAL(b, h, **layer)
                                    for b, h in zip(widths[-2::-1], heads[-2::-1]))
        self.fuse = nn.ModuleList(GatedConv2d(2 * b, b) for b in widths[-2::-1])
        self.head = nn.Conv2d(widths[0], 3, 3, padding=1)
        self.output = OUTPUTS[output]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.encoder(x)
        y = features[-1]
        for layer in self.bottleneck:
            y, _ = layer(y, y)
        y = decode(y, features, self.up, self.fuse, self._attend)
        return self.output(self.head(y))

    def _attend(self, i: int, y: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """The fine stage's merge: scale ``i``'s NDMHAL (query: the decoder feature, keys and
        values: the encoder's), its output and packed context side by side."""
        return torch.cat(self.attend[i](y, skip), dim=1)


class NDMHAGenerator(nn.Module):
    """Coarse-to-fine NDMHA generator: (corrupted RGB, mask) -> RGB in [0, 1].

    ``forward`` returns the fine output, or (coarse, fine) with ``return_coarse=True`` for the
    loss (a keyword, so that DistributedDataParallel's forward passes it through); without a
    coarse stage (``coarse_stage=False``) the coarse output is None.

    Options: ``widths``, ``dilations``, ``heads``, ``depth`` (NDMHALs at the lowest fine scale),
    ``window`` (None: global), ``expansion`` (GFF); the ablations ``deformable`` (False: plain
    depthwise convs in the DMHA), ``nested`` (False: one attention per NDMHAL), ``coarse_stage``
    (False: the fine stage reads the input directly); ``init`` (``kaiming``: kaiming-normal gated
    convs as released, the default; ``default``: PyTorch's), ``gate_bias`` (with kaiming: the
    gates' initial bias; the default 2 opens them, which is what lets the signal and its gradient
    through the stacks of gated convs: docs/architecture.md, "Initialisation: open gates") and
    ``output`` (``sigmoid`` or ``linear`` heads). The deformable convs compute on the process's
    backend (:func:`~ndmha.models.layers.set_backend`).
    """

    size_multiple = 8  # three stride-2 stages

    def __init__(self, widths: Sequence[int] = WIDTHS, dilations: Sequence[int] = DILATIONS,
                 heads: Sequence[int] = HEADS, depth: int = FINE_BOTTLENECK,
                 window: int | None = 8, expansion: float = 2.0, deformable: bool = True,
                 nested: bool = True, coarse_stage: bool = True, init: str = "kaiming",
                 gate_bias: float = 2.0, output: str = "sigmoid") -> None:
        super().__init__()
        if len(heads) != len(widths):
            raise ValueError(f"heads {list(heads)} must give one count per scale of widths "
                             f"{list(widths)}")
        if init not in ("default", "kaiming") or output not in OUTPUTS:
            raise ValueError(f"init must be default or kaiming, output one of {sorted(OUTPUTS)}")
        self.size_multiple = 2 ** (len(widths) - 1)
        self.coarse_to_fine = coarse_stage
        self.coarse = CoarseStage(4, widths, dilations, output) if coarse_stage else None
        self.fine = FineStage(4, widths, heads, depth, output, expansion=expansion, window=window,
                              nested=nested, deformable=deformable)
        if init == "kaiming":
            kaiming_gated_init(self, gate_bias)
        elif gate_bias:
            raise ValueError("gate_bias needs init: kaiming")

    def forward(self, image: torch.Tensor, mask: torch.Tensor, return_coarse: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor | None, torch.Tensor]:
        coarse = None
        if self.coarse is not None:
            coarse = self.coarse(torch.cat([image, mask], dim=1))
            image = image * (1 - mask) + coarse * mask
        fine = self.fine(torch.cat([image, mask], dim=1))
        return (coarse, fine) if return_coarse else fine
