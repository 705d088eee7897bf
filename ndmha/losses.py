"""Training objectives: a weighted sum of named terms, one weight per term in config."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ndmha.errors import ConfigError

Term = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def l1_term(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Reconstruction L1 loss over the whole image."""
    return (pred - target).abs().mean()


TERMS: dict[str, Term] = {"l1": l1_term}


class WeightedLoss(nn.Module):
    """``sum(weight_k * term_k)`` over the configured terms; returns the total and each term."""

    def __init__(self, weights: dict[str, float], key: str = "loss") -> None:
        super().__init__()
        unknown = set(weights) - set(TERMS)
        if unknown:
            raise ConfigError(f"{key}: unknown loss term(s) {sorted(unknown)} "
                              f"(choose from {sorted(TERMS)})")
        if not weights:
            raise ConfigError(f"{key}: at least one loss term is needed")
        self.weights = dict(weights)

    def forward(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        parts = {name: TERMS[name](pred, target, mask) for name in self.weights}
        total = sum(self.weights[name] * value for name, value in parts.items())
        return total, parts
