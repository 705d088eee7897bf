"""Architecture registry: every network the workflow can train, by its config name, with the
options (constructor arguments) an experiment may set."""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from ndmha.errors import ConfigError
from ndmha.models.baseline import BaselineUNet
from ndmha.models.ndmha import NDMHAGenerator
from ndmha.models.released import ReleasedNDMHA

ARCHITECTURES: dict[str, type[nn.Module]] = {
    "baseline": BaselineUNet,
    "ndmha": NDMHAGenerator,
    "ndmha_released": ReleasedNDMHA,
}


def architecture_options(name: str) -> dict[str, Any]:
    """The options of an architecture and their defaults (its constructor's keyword
    arguments)."""
    parameters = inspect.signature(ARCHITECTURES[name].__init__).parameters
    return {k: p.default for k, p in parameters.items()
            if k != "self" and p.kind is p.POSITIONAL_OR_KEYWORD}


def build_model(name: str, options: dict[str, Any] | None = None,
                key: str = "architecture") -> nn.Module:
    """A freshly initialised model of architecture ``name`` with ``options``; its deformable
    convs compute on the process's backend (:func:`ndmha.models.layers.set_backend`).
    Errors name ``key``."""
    if name not in ARCHITECTURES:
        raise ConfigError(f"{key}: unknown architecture {name!r} "
                          f"(choose from {sorted(ARCHITECTURES)})")
    options = dict(options or {})
    known = architecture_options(name)
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ConfigError(f"{key}: unknown option(s) {unknown} of architecture {name!r} "
                          f"(choose from {sorted(known)})")
    try:
        return ARCHITECTURES[name](**options)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{key}: {err}") from err


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_gmac(model: nn.Module, size: int, deformable: bool = True) -> float:
    """Multiply-accumulates (10^9) of one forward pass at ``size`` x ``size``, from
    ``torch.utils.flop_counter`` (FLOPs / 2), as the paper's GMAC column.

    A deformable conv is counted as a convolution of the same shapes (its offset conv is a conv
    and counted as one; the bilinear sampling is not counted), whatever its backend computes.
    ``deformable=False`` leaves the deformable convs out, as tools without a formula for a custom
    deformable op count (flop_counter on torchvision's ``deform_conv2d``, thop, fvcore): the
    likely reading of the paper's 15.01 (docs/architecture.md, "Counting GMAC").
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from ndmha.models.layers import DeformConv2d, use_backend

    deform_macs = []

    def as_conv(module: DeformConv2d, inputs: tuple, output: torch.Tensor) -> None:
        deform_macs.append(output.numel() * module.weight.shape[1] * module.taps)

    layers = {name: m for name, m in model.named_modules() if isinstance(m, DeformConv2d)}
    hooks = [m.register_forward_hook(as_conv) for m in layers.values()]
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    image = torch.zeros(1, 3, size, size, device=device)
    mask = torch.zeros(1, 1, size, size, device=device)
    try:
        with use_backend(model, "torch"), torch.no_grad(), \
                FlopCounterMode(display=False) as counter:
            model(image, mask)
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    # what the counter saw of the deformable convs' own products (not their offset convs)
    by_module = counter.get_flop_counts()
    inside = sum(by_module.get(f"{type(model).__name__}.{name}", {}).get(torch.ops.aten.bmm, 0)
                 for name in layers)
    macs = (counter.get_total_flops() - inside) / 2
    return (macs + (sum(deform_macs) if deformable else 0)) / 1e9
