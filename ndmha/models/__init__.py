"""Model registry: every architecture the workflow can train, by its config name."""

from __future__ import annotations

from torch import nn

from ndmha.errors import ConfigError
from ndmha.models.baseline import BaselineUNet

MODELS: dict[str, type[nn.Module]] = {
    "baseline": BaselineUNet,
}


def build_model(name: str) -> nn.Module:
    """A freshly initialised model by registry name."""
    if name not in MODELS:
        raise ConfigError(f"models: unknown model {name!r} (choose from {sorted(MODELS)})")
    return MODELS[name]()


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_gmac(model: nn.Module, size: int) -> float:
    """Multiply-accumulates (10^9) of one forward pass at ``size`` x ``size``, from
    ``torch.utils.flop_counter`` (FLOPs / 2), as the paper's GMAC column."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    image = torch.zeros(1, 3, size, size, device=device)
    mask = torch.zeros(1, 1, size, size, device=device)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(image, mask)
    model.train(was_training)
    return counter.get_total_flops() / 2e9
