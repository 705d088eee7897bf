"""The network the authors released (shrutiphutke/NDMA_Facial_Inpainting, ``Luna_Net``),
rebuilt from its structure with this project's layers, fed the way our pipeline feeds every
model. docs/architecture.md compares it, row by row, with the paper and with our ``ndmha``.

Structure (widths ``(64, 128, 256, 512, 1024) // factor``, factor 8: 8 ... 128, five scales):
- Coarse stage: a 3x3 gated conv to w0, four stride-2 gated convs to w4, four more gated convs
  at w4 (named dilated in the release, dilation 1); decoder at 1/8, 1/4, 1/2: gated deconv, concat
  with the encoder feature, gated conv 2w -> w; at full size a gated deconv w1 -> w0 and a gated
  conv w0 -> w0 with no concat; a 1x1 conv to RGB, no output activation.
- The coarse output is pasted into the holes; the fine stage reads (pasted image, mask).
- Fine stage: the same encoder and bottleneck; at every decoder scale (1/8 ... full size) a gated
  deconv, then a post-norm NDMHAL (decoder feature x, encoder feature p) whose output and packed
  context are concatenated and fused by a gated conv 2w -> w; a 1x1 conv to RGB.
- NDMHAL: 8 heads at every scale, GFF expansion 2.33, global attention (no window), q the
  encoder feature itself (no projection), k and v from a 1x1 conv and a *full* 3x3 DCNv1 (the
  release computes a modulation and never passes it on), post-norm residuals.
- Gated convs: LeakyReLU(0.2)(feature) * sigmoid(gate), kaiming-normal weights.

What the release does that we do not (docs/architecture.md, "The released network"): every gated
conv constructs a BatchNorm it never applies (4,000 parameters that never train), every
deformable conv a modulation conv whose output is unused (38,952 parameters, 0.32 GMAC at 256 px;
:meth:`ReleasedNDMHA.dead_branches`), and the inputs are BGR in
[-1, 1] with the mask in [-1, 1], which turns the paste into ``2 * input - coarse`` outside the
holes (``mask_range="signed"`` reproduces that). Here the model takes our inputs (RGB and mask in
[0, 1]), maps the image to [-1, 1] as the release does, replicates the mask to three channels
(six input channels, as released), and maps both outputs back with ``(y + 1) / 2``.
"""

from __future__ import annotations

import torch
from torch import nn

from ndmha.models.layers import NDMHAL, GatedConv2d, GatedDeconv2d, kaiming_gated_init
from ndmha.models.ndmha import GatedEncoder, decode

BASE_WIDTHS = (64, 128, 256, 512, 1024)
#: what the input image holds in the holes when it reaches the network: as our data give it
#: (the overlay's black), or set to black (0) or white (1) as a checkpoint was trained with
HOLE_FILLS = ("as_given", "black", "white")


class ReleasedStage(nn.Module):
    """One stage of the release: gated encoder, four gated convs at the lowest scale, and a
    decoder that either concatenates encoder features (coarse) or attends to them through an
    NDMHAL at every scale (fine)."""

    def __init__(self, in_channels: int, widths: tuple[int, ...], attention: dict | None) -> None:
        super().__init__()
        self.encoder = GatedEncoder(in_channels, widths, stem_kernel=3)
        self.bottleneck = nn.Sequential(*(GatedConv2d(widths[-1], widths[-1]) for _ in range(4)))
        decoder_widths = widths[-2::-1]  # 1/8 ... full size
        self.up = nn.ModuleList(GatedDeconv2d(a, b) for a, b in zip(widths[:0:-1], decoder_widths))
        self.attend = (nn.ModuleList(NDMHAL(w, **attention) for w in decoder_widths)
                       if attention is not None else None)
        # the coarse stage has no skip at full size: its last fuse takes w0 alone
        self.fuse = nn.ModuleList(
            GatedConv2d(w if (attention is None and w == widths[0]) else 2 * w, w)
            for w in decoder_widths)
        self.head = nn.Conv2d(widths[0], 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.encoder(x)
        return self.head(decode(self.bottleneck(features[-1]), features, self.up, self.fuse,
                                self._merge))

    def _merge(self, i: int, y: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """Scale ``i``'s merge as released: the NDMHAL's output and packed context (fine), or the
        encoder feature before the upsampled one (coarse; none at full size)."""
        if self.attend is not None:
            return torch.cat(self.attend[i](y, skip), dim=1)
        return torch.cat([skip, y], dim=1) if i < len(self.up) - 1 else y


class ReleasedNDMHA(nn.Module):
    """The authors' released NDMHA network (``Luna_Net``, factor 8): (corrupted RGB, mask) ->
    RGB, values in [0, 1] at the interface, [-1, 1] inside as released.

    ``forward`` returns the fine output, or (coarse, fine) with ``return_coarse=True``.
    """

    size_multiple = 16  # four stride-2 stages
    coarse_to_fine = True

    def __init__(self, factor: int = 8, heads: int = 8, expansion: float = 2.33,
                 mask_range: str = "unit", hole_fill: str = "as_given") -> None:
        super().__init__()
        if mask_range not in ("unit", "signed"):
            raise ValueError(f"mask_range must be 'unit' or 'signed', got {mask_range!r}")
        if hole_fill not in HOLE_FILLS:
            raise ValueError(f"hole_fill must be one of {HOLE_FILLS}, got {hole_fill!r}")
        self.mask_range, self.hole_fill = mask_range, hole_fill
        widths = tuple(w // factor for w in BASE_WIDTHS)
        attention = {"heads": heads, "expansion": expansion, "window": None, "norm": "post",
                     "depthwise": False, "modulated": False,
                     "project_query": False}
        self.coarse = ReleasedStage(6, widths, None)
        self.fine = ReleasedStage(6, widths, attention)
        kaiming_gated_init(self)

    def forward(self, image: torch.Tensor, mask: torch.Tensor, return_coarse: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if self.hole_fill != "as_given":  # what the release's input images hold in the holes
            image = image * (1 - mask) + (mask if self.hole_fill == "white" else 0)
        signed = 2 * image - 1                       # the release's Normalize(0.5, 0.5)
        m = (2 * mask - 1 if self.mask_range == "signed" else mask).expand(-1, 3, -1, -1)
        coarse = self.coarse(torch.cat([signed, m], dim=1))
        pasted = signed * (1 - m) + coarse * m
        fine = self.fine(torch.cat([pasted, m], dim=1))
        coarse, fine = (coarse + 1) / 2, (fine + 1) / 2
        return (coarse, fine) if return_coarse else fine

    @staticmethod
    def dead_branches(factor: int = 8, size: int = 256) -> dict[str, float]:
        """What the release builds but never uses, counted from its structure: the affine
        weights of a BatchNorm in every gated conv (never applied), and in every deformable conv
        a 3x3 modulation conv (2w -> 9) that the release computes and never passes on: its
        parameters never train, its MACs are spent at every forward (at ``size`` x ``size``)."""
        widths = [w // factor for w in BASE_WIDTHS]
        decoder = widths[-2::-1]  # 1/8 ... full size
        # every gated conv's output width: encoder, bottleneck, up (deconv) and fuse, two stages
        batchnorm = 2 * 2 * sum(widths + [widths[-1]] * 4 + decoder + decoder)
        sides = [size // 2 ** (len(decoder) - 1 - i) for i in range(len(decoder))]
        # each NDMHAL: two DMHAs, each with one deformable conv 2w -> 2w
        modulation = sum(2 * (2 * w * 9 * 9 + 9) for w in decoder)
        modulation_gmac = sum(2 * 2 * w * 9 * 9 * side * side for w, side in zip(decoder, sides))
        return {"batchnorm_parameters": batchnorm, "modulation_parameters": modulation,
                "modulation_gmac": modulation_gmac / 1e9}
