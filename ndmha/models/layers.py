"""The paper's layers: gated (de)convolution, deformable convolution, Deformable Multi-Head
Attention (DMHA), Gated Feed-Forward (GFF) and the Nested Deformable Multi-Head Attention Layer
(NDMHAL). Our reading of the paper is written down in docs/architecture.md.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import math
import os
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ndmha.environment import DEFORM_BACKEND_ENV
from ndmha.errors import ConfigError

# ---------------------------------------------------------------------------------------------
# Gated convolutions (coarse stage)


class GatedConv2d(nn.Module):
    """Gated convolution: ``LeakyReLU(conv(x)) * sigmoid(conv_g(x))`` (Yu et al., used by the
    paper's coarse encoder / decoder). The gate learns, per pixel and channel, how much valid
    information passes, which is what lets a plain conv cope with holes."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 dilation: int = 1, activation: bool = True) -> None:
        super().__init__()
        padding = dilation * (kernel_size - 1) // 2
        self.conv = nn.Conv2d(in_channels, 2 * out_channels, kernel_size, stride, padding, dilation)
        self.activation = nn.LeakyReLU(0.2) if activation else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feature, gate = self.conv(x).chunk(2, dim=1)
        return self.activation(feature) * torch.sigmoid(gate)


def kaiming_gated_init(model: nn.Module, gate_bias: float = 0.0) -> None:
    """Kaiming-normal weights (fan-in, gain sqrt(2)) for every gated conv of ``model``, as the
    authors' release initialises them; PyTorch's default (kaiming-uniform with a = sqrt(5), a
    gain of 1/sqrt(3)) shrinks a signal by about sqrt(6) per gated conv. ``gate_bias`` > 0 opens
    the gates at the start (sigmoid(2) = 0.88): the gate of a fresh layer then passes its
    feature instead of halving it, so the signal keeps its size through a stack of gated convs."""
    for module in model.modules():
        if isinstance(module, GatedConv2d):
            nn.init.kaiming_normal_(module.conv.weight)
            if gate_bias:
                with torch.no_grad():
                    module.conv.bias[module.conv.out_channels // 2:].fill_(gate_bias)


class GatedDeconv2d(nn.Module):
    """Gated transposed convolution: 2x upsampling followed by a gated convolution (the
    resize-convolution form, free of the checkerboard artefacts of strided transposed convs)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv = GatedConv2d(in_channels, out_channels, kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


# ---------------------------------------------------------------------------------------------
# Deformable convolution with interchangeable backends

DeformFn = Callable[..., torch.Tensor]


def _in_float32(fn: DeformFn) -> DeformFn:
    """A compiled deformable conv run in float32 (at least), autocast off, whatever the
    activations' dtype, its output cast back: torchvision's CPU kernel has no bf16 version
    ("not implemented for BFloat16" under CPU autocast), mmcv's op has no autocast wrapper
    (it would get bf16 activations beside float32 weights), the fused kernel is float32 and
    float64 only."""

    @functools.wraps(fn)
    def wrapped(x: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor | None,
                weight: torch.Tensor, bias: torch.Tensor | None, padding: int,
                dilation: int) -> torch.Tensor:
        wide = torch.promote_types(x.dtype, torch.float32)
        cast = [t if t is None else t.to(wide) for t in (x, offset, mask, weight, bias)]
        with torch.autocast(x.device.type, enabled=False):
            return fn(*cast, padding, dilation).to(x.dtype)

    return wrapped


@_in_float32
def _torchvision_deform(x: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor | None,
                        weight: torch.Tensor, bias: torch.Tensor | None, padding: int,
                        dilation: int) -> torch.Tensor:
    from torchvision.ops import deform_conv2d

    return deform_conv2d(x, offset, weight, bias, padding=(padding, padding),
                         dilation=(dilation, dilation), mask=mask)


@_in_float32
def _mmcv_deform(x: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor | None,
                 weight: torch.Tensor, bias: torch.Tensor | None, padding: int,
                 dilation: int) -> torch.Tensor:
    from mmcv.ops import deform_conv2d, modulated_deform_conv2d

    if min(x.shape[-2:]) < max(weight.shape[-2:]):
        # mmcv's shape check refuses an input smaller than the kernel, padding not counted
        # ("input image is smaller than kernel"): a 16 px image's 2 x 2 level. The reference
        # computes the same convolution there.
        return _torch_deform(x, offset, mask, weight, bias, padding, dilation)
    groups = x.shape[1] // weight.shape[1]
    if mask is None:  # DCNv1 (mmcv's deform_conv2d takes no bias)
        out = deform_conv2d(x, offset, weight, 1, padding, dilation, groups, 1)
        return out if bias is None else out + bias.view(1, -1, 1, 1)
    return modulated_deform_conv2d(x, offset, mask, weight, bias, 1, padding, dilation, groups, 1)


def _torch_deform(x: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor | None,
                  weight: torch.Tensor, bias: torch.Tensor | None, padding: int,
                  dilation: int) -> torch.Tensor:
    """Reference deformable convolution (stride 1) in plain PyTorch.

    Each kernel tap k samples the input bilinearly at ``p + p_k + offset_k`` (zeros outside),
    is scaled by its modulation ``mask_k`` (DCNv2; none for DCNv1), and the taps are combined by
    the (grouped) weights.
    Offsets are ordered (dy, dx) per tap, row-major over the kernel, as in torchvision.
    """
    n, c, h, w = x.shape
    out_channels, group_in, kh, kw = weight.shape
    groups = c // group_in
    taps = kh * kw
    # Sampling positions and the bilinear sampling itself in float32 at least, whatever the
    # activations' dtype: in bf16 a coordinate near 200 has a step of 1 px (a 0.3 px offset
    # vanishes) and a normalised grid value near +-1 a step of 0.0039 (half a pixel at 256 px).
    # Only the sampled values are rounded back to the activations' dtype.
    pos = torch.promote_types(x.dtype, torch.float32)
    ys = torch.arange(h, device=x.device, dtype=pos)
    xs = torch.arange(w, device=x.device, dtype=pos)
    ky, kx = torch.meshgrid(torch.arange(kh, device=x.device, dtype=pos),
                            torch.arange(kw, device=x.device, dtype=pos), indexing="ij")
    offset = offset.reshape(n, taps, 2, h, w).to(pos)
    py = ys.reshape(1, 1, h, 1) - padding + dilation * ky.reshape(1, taps, 1, 1) + offset[:, :, 0]
    px = xs.reshape(1, 1, 1, w) - padding + dilation * kx.reshape(1, taps, 1, 1) + offset[:, :, 1]
    # grid_sample wants x, y in [-1, 1] with align_corners=True: -1 -> pixel 0, 1 -> pixel size-1
    grid = torch.stack([2 * px / max(w - 1, 1) - 1, 2 * py / max(h - 1, 1) - 1], dim=-1)
    sampled = F.grid_sample(x.to(pos), grid.reshape(n, taps * h, w, 2), mode="bilinear",
                            padding_mode="zeros", align_corners=True)
    sampled = sampled.reshape(n, c, taps, h, w).to(x.dtype)
    if group_in == 1 and out_channels == groups:  # depthwise: the taps weighed and summed
        kernel = weight.reshape(1, c, taps, 1, 1)   # (2.5x faster on a CPU than the einsum's
        if mask is not None:                         # batch of tiny matrix products)
            kernel = kernel * mask.reshape(n, 1, taps, h, w)
        out = (sampled * kernel).sum(2)
    else:
        if mask is not None:
            sampled = sampled * mask.reshape(n, 1, taps, h, w)
        sampled = sampled.reshape(n, groups, group_in * taps, h, w)
        kernel = weight.reshape(groups, out_channels // groups, group_in * taps)
        out = torch.einsum("ngkhw,gok->ngohw", sampled, kernel).reshape(n, out_channels, h, w)
    return out if bias is None else out + bias.reshape(1, -1, 1, 1)


@_in_float32
def _fused_deform(x: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor | None,
                  weight: torch.Tensor, bias: torch.Tensor | None, padding: int,
                  dilation: int) -> torch.Tensor:
    """The fused CPU kernel (ndmha/models/deform_cpu.c) for a depthwise deformable conv on the
    CPU: bilinear sampling, modulation and tap weights in one pass, nothing of (N, C, taps, H, W)
    written; 7.6x the reference's forward + backward over NDMHA's 20 deformable convs
    (docs/performance.md). Any other grouping or device runs the pure-torch reference."""
    from ndmha.models import deform_cpu

    depthwise = weight.shape[1] == 1 and weight.shape[0] == x.shape[1]
    if not depthwise or x.device.type != "cpu":
        return _torch_deform(x, offset, mask, weight, bias, padding, dilation)
    out = deform_cpu.depthwise_deform(x, offset, mask, weight, padding, dilation)
    return out if bias is None else out + bias.reshape(1, -1, 1, 1)


DEFORM_BACKENDS: dict[str, tuple[str, DeformFn]] = {
    "torchvision": ("torchvision.ops", _torchvision_deform),
    "mmcv": ("mmcv.ops", _mmcv_deform),
    "torch": ("torch", _torch_deform),
    "fused": ("ndmha.models.deform_cpu", _fused_deform),
}


#: resolved on the device a layer runs on (:func:`resolve_backend`): the default everywhere
AUTO = "auto"
#: the process's backend (``ndmha.deform_backend``), set once by each entry point (the
#: workflow's script runner, the command line, the preflight) with :func:`set_backend`;
#: an environment variable, so that torchrun's children inherit it
BACKEND_ENV = DEFORM_BACKEND_ENV


def set_backend(name: str, key: str = "ndmha.deform_backend") -> str:
    """Make ``name`` the backend of every deformable conv of this process (and of the processes
    it starts) whose own is ``auto``: the value changes nothing learned, only what computes it.
    A backend that does not import here is a :class:`ConfigError` naming ``key`` (where the
    variable is set without this check, when the first deformable conv is built)."""
    os.environ[BACKEND_ENV] = check_backend(name, key)
    return name


def resolve_backend(name: str, device: torch.device) -> str:
    """``auto`` -> the process's backend where one is set (:func:`set_backend`), else on a
    CPU the fused kernel where it builds (the fastest there: docs/performance.md), else the
    pure-torch reference; torchvision's on a GPU (until a GPU measurement says otherwise); other
    names as they are."""
    if name != AUTO:
        return name
    chosen = os.environ.get(BACKEND_ENV, AUTO)
    if chosen != AUTO:
        return chosen
    if device.type == "cuda":
        return "torchvision"
    return "fused" if backend_available("fused")[0] else "torch"


def backend_available(name: str) -> tuple[bool, str]:
    """Whether a backend imports (and for ``fused``, builds) here, and why not (``auto`` needs
    the pure-torch backend and torchvision's: both ship with the dependencies)."""
    if name == AUTO:
        return True, ""
    if name not in DEFORM_BACKENDS:
        return False, (f"unknown deformable-conv backend {name!r} (choose from "
                       f"{sorted([AUTO, *DEFORM_BACKENDS])})")
    if name == "fused":
        from ndmha.models import deform_cpu

        return deform_cpu.available()
    module = DEFORM_BACKENDS[name][0]
    try:
        ops = importlib.import_module(module)
    except Exception as err:  # a broken compiled extension raises more than ImportError
        hint = " (build mmcv's ops for this torch: make mmcv, about 10 min)" if name == "mmcv" else ""
        return False, f"{module} does not import: {err}{hint}"
    if name == "mmcv" and not hasattr(ops, "modulated_deform_conv2d"):
        return False, "mmcv is installed without its compiled ops (build them: make mmcv)"
    return True, ""


def check_backend(name: str, key: str = "ndmha.deform_backend") -> str:
    """``name`` if that backend imports here, else a :class:`ConfigError` naming ``key``."""
    ok, why = backend_available(name)
    if not ok:
        raise ConfigError(f"{key}: {why}")
    return name


class DeformConv2d(nn.Module):
    """Deformable convolution, stride 1, any groups: modulated (DCNv2) or not (DCNv1).

    Offsets (and the modulation) come from a zero-initialised 3x3 conv on the input, the
    modulation is ``2 * sigmoid(.)``: at initialisation every offset is 0 and every modulation 1,
    so training starts from a plain convolution. ``backend`` (a :data:`DEFORM_BACKENDS` name, or
    ``auto``: the process's, or chosen by the device of each call) is the layer's own
    implementation; :func:`use_backend` changes it for a whole model.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 groups: int = 1, dilation: int = 1, bias: bool = False,
                 backend: str = AUTO, modulated: bool = True) -> None:
        super().__init__()
        self.padding = dilation * (kernel_size - 1) // 2
        self.dilation = dilation
        self.taps = kernel_size * kernel_size
        self.backend = check_backend(backend)
        if backend == AUTO:  # the process's, where one is set
            check_backend(os.environ.get(BACKEND_ENV, AUTO))
        self.modulated = modulated
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, kernel_size,
                                               kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self.offset = nn.Conv2d(in_channels, (3 if modulated else 2) * self.taps, 3, padding=1)
        nn.init.zeros_(self.offset.weight)
        nn.init.zeros_(self.offset.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        offsets = self.offset(x)
        if self.modulated:
            dy_dx, modulation = offsets.split([2 * self.taps, self.taps], dim=1)
            modulation = 2 * torch.sigmoid(modulation)
        else:  # DCNv1: every tap weighs 1
            dy_dx, modulation = offsets, None
        deform = DEFORM_BACKENDS[resolve_backend(self.backend, x.device)][1]
        return deform(x, dy_dx.contiguous(), modulation, self.weight, self.bias, self.padding,
                      self.dilation)


def pin_backend(model: nn.Module, name: str) -> list[str]:
    """Every :class:`DeformConv2d` of ``model`` on backend ``name`` from now on, whatever the
    process's (a benchmark setting backends side by side); the layers' own choices before."""
    layers = [m for m in model.modules() if isinstance(m, DeformConv2d)]
    saved = [m.backend for m in layers]
    check_backend(name)
    for layer in layers:
        layer.backend = name
    return saved


@contextlib.contextmanager
def use_backend(model: nn.Module, name: str) -> Iterator[nn.Module]:
    """Run every :class:`DeformConv2d` of ``model`` on backend ``name`` inside the block (the
    weights are the same whatever the backend), then put the model's own choice back."""
    layers = [m for m in model.modules() if isinstance(m, DeformConv2d)]
    saved = pin_backend(model, name)
    try:
        yield model
    finally:
        for layer, backend in zip(layers, saved):
            layer.backend = backend


# ---------------------------------------------------------------------------------------------
# Attention, feed-forward and the nested layer (fine stage)


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of every pixel of an (N, C, H, W) map."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def _to_windows(x: torch.Tensor, window: int | None) -> tuple[torch.Tensor, tuple[int, int] | None]:
    """(N, C, H, W) -> (N * windows, C, window * window) and the window grid, padding H and W up
    to a multiple of ``window``; the whole map is one window when ``window`` is None or covers it."""
    n, c, h, w = x.shape
    if window is None or (h <= window and w <= window):
        return x.flatten(2), None
    x = F.pad(x, (0, (-w) % window, 0, (-h) % window))
    gh, gw = x.shape[-2] // window, x.shape[-1] // window
    x = x.view(n, c, gh, window, gw, window).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(n * gh * gw, c, window * window), (gh, gw)


def _from_windows(x: torch.Tensor, shape: torch.Size, window: int | None,
                  grid: tuple[int, int] | None) -> torch.Tensor:
    """Inverse of :func:`_to_windows`: back to ``shape`` (N, C, H, W), padding cropped."""
    n, c, h, w = shape
    if grid is None:
        return x.reshape(n, c, h, w)
    gh, gw = grid
    x = x.view(n, gh, gw, c, window, window).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(n, c, gh * window, gw * window)[..., :h, :w]


class DeformableMultiHeadAttention(nn.Module):
    """Deformable Multi-Head Attention (DMHA).

    K and V come from ``x`` through a 1x1 conv and a 3x3 deformable conv (depthwise, or full as
    in the authors' release); Q from ``query_source`` (``x`` when None) through the same kind of
    projection, or as it is (``project_query=False``, the release). Attention runs across
    channels, per head: ``softmax(q k^T * t) v`` with q and k L2-normalised over the pixels and a
    learnable temperature t per head, so the attention map is (C/h x C/h) and the cost is linear
    in H x W. With ``window`` set, the pixels are grouped into non-overlapping
    ``window x window`` windows and each window attends on its own.

    ``deformable=False`` (an ablation) replaces the deformable convs by plain 3x3 convs of the
    same grouping (Restormer's MDTA).
    """

    def __init__(self, channels: int, heads: int, window: int | None = None,
                 backend: str = AUTO, deformable: bool = True, depthwise: bool = True,
                 modulated: bool = True, project_query: bool = True) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"channels ({channels}) must be divisible by heads ({heads})")
        self.heads = heads
        self.window = window
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))

        def spatial(c: int) -> nn.Module:
            groups = c if depthwise else 1
            if deformable:
                return DeformConv2d(c, c, groups=groups, backend=backend, modulated=modulated)
            return nn.Conv2d(c, c, 3, padding=1, groups=groups, bias=False)

        self.q = (nn.Sequential(nn.Conv2d(channels, channels, 1, bias=False), spatial(channels))
                  if project_query else nn.Identity())
        self.kv = nn.Sequential(nn.Conv2d(channels, 2 * channels, 1, bias=False),
                                spatial(2 * channels))
        self.project = nn.Conv2d(channels, channels, 1, bias=False)

    def _heads(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int] | None]:
        tokens, grid = _to_windows(x, self.window)
        b, c, p = tokens.shape
        return tokens.view(b, self.heads, c // self.heads, p), grid

    def forward(self, x: torch.Tensor, query_source: torch.Tensor | None = None) -> torch.Tensor:
        k, v = self.kv(x).chunk(2, dim=1)
        q, grid = self._heads(self.q(x if query_source is None else query_source))
        k, _ = self._heads(k)
        v, _ = self._heads(v)
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        attn = torch.softmax(q @ k.transpose(-2, -1) * self.temperature, dim=-1)
        out = _from_windows((attn @ v).flatten(1, 2), x.shape, self.window, grid)
        return self.project(out)


class GatedFeedForward(nn.Module):
    """Gated Feed-Forward (GFF): 1x1 expand to two branches of ``int(channels * expansion)``,
    depthwise 3x3 conv, ``GELU(gate) * value``, 1x1 project back."""

    def __init__(self, channels: int, expansion: float = 2.0) -> None:
        super().__init__()
        hidden = int(channels * expansion)
        self.expand = nn.Conv2d(channels, 2 * hidden, 1, bias=False)
        self.depthwise = nn.Conv2d(2 * hidden, 2 * hidden, 3, padding=1, groups=2 * hidden,
                                   bias=False)
        self.project = nn.Conv2d(hidden, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.depthwise(self.expand(x)).chunk(2, dim=1)
        return self.project(F.gelu(gate) * value)


class NDMHAL(nn.Module):
    """Nested Deformable Multi-Head Attention Layer (NDMHAL).

    Two nested DMHAs, as in linear unified nested attention (the authors' code calls it Luna):
    the *pack* attention summarises the decoder features ``x`` under queries taken from the
    encoder features ``skip`` (inside ``window`` x ``window`` windows); the *unpack* attention
    then reads that packed context back globally under the same queries; a GFF follows.
    Returns the updated decoder features and the packed context.

    ``norm="pre"`` (our reading): ``packed = skip + pack(n(x), q=n(skip))``,
    ``x = x + unpack(n(packed), q=n(skip))``, ``x = x + GFF(n(x))``.
    ``norm="post"`` (the authors' release): ``a = pack(x, q=skip)``,
    ``x = n(unpack(a, q=skip) + x)``, ``packed = n(a + skip)``, ``x = n(GFF(x) + x)``.
    ``nested=False`` (an ablation) keeps one attention, ``x`` attending under the ``skip``
    queries, and returns ``skip`` as the context. ``attention`` holds the DMHA options.
    """

    def __init__(self, channels: int, heads: int, expansion: float = 2.0,
                 window: int | None = 8, nested: bool = True, norm: str = "pre",
                 **attention: object) -> None:
        super().__init__()
        if norm not in ("pre", "post"):
            raise ValueError(f"norm must be 'pre' or 'post', got {norm!r}")
        self.nested, self.norm = nested, norm
        self.norm_x = ChannelLayerNorm(channels)
        if norm == "pre":
            self.norm_skip = ChannelLayerNorm(channels)
        self.norm_ff = ChannelLayerNorm(channels)
        self.pack = DeformableMultiHeadAttention(channels, heads, window, **attention)
        if nested:
            self.norm_packed = ChannelLayerNorm(channels)
            self.unpack = DeformableMultiHeadAttention(channels, heads, None, **attention)
        self.feed_forward = GatedFeedForward(channels, expansion)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.norm == "post":
            attended = self.pack(x, query_source=skip)
            if self.nested:
                x = self.norm_x(self.unpack(attended, query_source=skip) + x)
                packed = self.norm_packed(attended + skip)
            else:
                x, packed = self.norm_x(attended + x), skip
            return self.norm_ff(self.feed_forward(x) + x), packed
        query = self.norm_skip(skip)
        if self.nested:
            packed = skip + self.pack(self.norm_x(x), query_source=query)
            x = x + self.unpack(self.norm_packed(packed), query_source=query)
        else:
            x, packed = x + self.pack(self.norm_x(x), query_source=query), skip
        return x + self.feed_forward(self.norm_ff(x)), packed
