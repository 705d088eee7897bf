"""Model registry: every architecture the workflow can train, by its config name."""

from __future__ import annotations

from torch import nn

from ndmha.errors import ConfigError
from ndmha.models.baseline import BaselineUNet
from ndmha.models.ndmha import NDMHAGenerator

MODELS: dict[str, type[nn.Module]] = {
    "baseline": BaselineUNet,
    "ndmha": NDMHAGenerator,
}


def build_model(name: str) -> nn.Module:
    """A freshly initialised model by registry name."""
    if name not in MODELS:
        raise ConfigError(f"models: unknown model {name!r} (choose from {sorted(MODELS)})")
    return MODELS[name]()


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _deform_conv_flops(input_shape, weight_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of ``torchvision::deform_conv2d`` as a convolution of the same shapes (the bilinear
    sampling is not counted, as the paper's GMAC figures do not count it either)."""
    from torch.utils.flop_counter import conv_flop_count

    return conv_flop_count(list(input_shape), list(weight_shape), list(out_shape))


def count_gmac(model: nn.Module, size: int) -> float:
    """Multiply-accumulates (10^9) of one forward pass at ``size`` x ``size``, from
    ``torch.utils.flop_counter`` (FLOPs / 2), as the paper's GMAC column. Deformable convs are
    counted through the torchvision backend."""
    import torch
    import torchvision.ops  # noqa: F401  (registers torch.ops.torchvision.deform_conv2d)
    from torch.utils.flop_counter import FlopCounterMode

    from ndmha.models import layers

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    image = torch.zeros(1, 3, size, size, device=device)
    mask = torch.zeros(1, 1, size, size, device=device)
    mapping = {torch.ops.torchvision.deform_conv2d.default: _deform_conv_flops}
    saved = layers.get_deform_backend()
    layers.set_deform_backend("torchvision")
    try:
        with FlopCounterMode(display=False, custom_mapping=mapping) as counter, torch.no_grad():
            model(image, mask)
    finally:
        layers.set_deform_backend(saved)
        model.train(was_training)
    return counter.get_total_flops() / 2e9
