"""The paper's four-term objective: L1 + adversarial + perceptual (VGG19) + Sobel edge loss,
one weight per term in config (``loss.<model>``). Terms with no weight, or a weight of 0, are
not built (``loss.ndmha.perceptual: 0`` trains without VGG19).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ndmha.errors import ConfigError
from ndmha.metrics import composite
from ndmha.models.discriminator import PatchDiscriminator
from ndmha.weights import PERCEPTUAL_KEY, REGISTRY, locate, perceptual_off

log = logging.getLogger("ndmha")

TERMS = ("l1", "adversarial", "perceptual", "edge")
EDGE_EPS = 1e-6
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: the perceptual loss's taps: node (layer index in torchvision's vgg19().features) -> name
VGG_TAPS = {"1": "relu1_1", "6": "relu2_1", "11": "relu3_1", "20": "relu4_1", "29": "relu5_1"}
VGG_DEPTH = max(map(int, VGG_TAPS)) + 1  # the layers the taps need


@dataclass
class PerceptualSettings:
    """Where the VGG19 weights come from (config key ``perceptual``)."""

    vgg19_weights: str | bool = ""  # a bare off in YAML is false: refused (perceptual_off)
    allow_random_perceptual: bool = False


class SobelEdgeLoss(nn.Module):
    """Edge loss: L1 between the Sobel gradient magnitudes of prediction and target (grayscale).

    The magnitude is ``sqrt(gx^2 + gy^2 + eps)``: the eps inside the square root keeps its gradient
    finite on flat regions, where the seed report's edge loss divided by zero and went NaN.

    Hand-written rather than ``kornia.filters.sobel``: kornia is not a dependency and would
    replace only these lines; its ``sobel`` also normalises the kernel (a factor 1/8 the loss's
    weight would absorb) and puts its eps outside our replicate-padded magnitude.
    """

    def __init__(self, eps: float = EDGE_EPS) -> None:
        super().__init__()
        gx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
        self.register_buffer("kernel", torch.stack([gx, gx.t()]).unsqueeze(1), persistent=False)
        self.eps = eps

    def magnitude(self, image: torch.Tensor) -> torch.Tensor:
        gray = (0.299 * image[:, 0:1] + 0.587 * image[:, 1:2] + 0.114 * image[:, 2:3])
        grad = F.conv2d(F.pad(gray, (1, 1, 1, 1), mode="replicate"), self.kernel.to(gray.dtype))
        return torch.sqrt(grad.pow(2).sum(dim=1, keepdim=True) + self.eps)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (self.magnitude(pred) - self.magnitude(target)).abs().mean()


class PerceptualLoss(nn.Module):
    """Perceptual loss: L1 between VGG19 features (relu1_1 ... relu5_1) of prediction and target.

    The weights are torchvision's ``vgg19-dcbb9e9d.pth``, found and hash-checked by
    :mod:`ndmha.weights` (a path, or torch's hub cache); without them the loss refuses to run, unless ``allow_random_perceptual`` is set (the demo), in which case it uses
    a random, frozen VGG19 and says so in the log. The network is frozen either way.
    """

    def __init__(self, settings: PerceptualSettings) -> None:
        super().__init__()
        from torchvision.models import vgg19
        from torchvision.models.feature_extraction import create_feature_extractor

        features = vgg19(weights=None).features[:VGG_DEPTH]
        found = locate(PERCEPTUAL_KEY, settings.vgg19_weights, REGISTRY["vgg19"])
        if found.off:  # the config check refuses it before any job; a direct caller too
            raise ConfigError(perceptual_off())
        self.random_weights = not found.found
        if found.found:
            state = torch.load(found.path, map_location="cpu", weights_only=True)
            prefix = "features."
            features.load_state_dict({k[len(prefix):]: v for k, v in state.items()
                                      if k.startswith(prefix)
                                      and int(k.split(".")[1]) < VGG_DEPTH})
        elif not settings.allow_random_perceptual:
            raise ConfigError(f"{found.message()}; perceptual.allow_random_perceptual: true "
                              "allows random weights for a smoke test")
        else:
            log.warning("perceptual loss uses RANDOM VGG19 weights (%s): a smoke test, not the "
                        "paper's perceptual loss", found.problem)
        # the taps by torchvision's feature extractor (an fx graph of the same layers: the same
        # state_dict keys, bitwise the same features as running the layers one by one)
        self.features = create_feature_extractor(features.eval(), VGG_TAPS).requires_grad_(False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> "PerceptualLoss":
        super().train(mode)
        self.features.eval()  # frozen: never in training mode
        return self

    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """relu1_1 ... relu5_1 of the ImageNet-normalised image, in that order."""
        return list(self.features((x - self.mean) / self.std).values())

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            wanted = self._taps(target)
        return sum(F.l1_loss(a, b) for a, b in zip(self._taps(pred), wanted)) / len(wanted)


class Objective(nn.Module):
    """``sum_k weight_k * term_k`` over the configured terms, and the discriminator's loss.

    - ``l1``: mean absolute error of the output, plus that of the coarse output when the model
      has a coarse stage;
    - ``adversarial``: hinge loss against a spectral-norm PatchGAN that judges the composite
      (prediction in the holes, input elsewhere) with the mask;
    - ``perceptual``: :class:`PerceptualLoss`; ``edge``: :class:`SobelEdgeLoss`.
    """

    def __init__(self, weights: dict[str, float], key: str = "loss",
                 perceptual: PerceptualSettings | None = None) -> None:
        super().__init__()
        unknown = set(weights) - set(TERMS)
        if unknown:
            raise ConfigError(f"{key}: unknown loss term(s) {sorted(unknown)} "
                              f"(choose from {list(TERMS)})")
        weights = {term: w for term, w in weights.items() if w}  # a weight of 0: no term
        if not weights:
            raise ConfigError(f"{key}: at least one loss term with a weight above 0 is needed")
        self.weights = weights
        self.discriminator = PatchDiscriminator() if "adversarial" in weights else None
        self.perceptual = (PerceptualLoss(perceptual or PerceptualSettings())
                           if "perceptual" in weights else None)
        self.edge = SobelEdgeLoss() if "edge" in weights else None

    @property
    def warnings(self) -> list[str]:
        """Caveats to carry into the results (e.g. a random perceptual network)."""
        if self.perceptual is not None and self.perceptual.random_weights:
            return ["perceptual loss used random VGG19 weights (no checkpoint given)"]
        return []

    def forward(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                image: torch.Tensor, coarse: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        parts: dict[str, torch.Tensor] = {}
        if "l1" in self.weights:
            parts["l1"] = F.l1_loss(pred, target)
            if coarse is not None:
                parts["l1"] = parts["l1"] + F.l1_loss(coarse, target)
        if self.discriminator is not None:
            parts["adversarial"] = -self.discriminator(composite(pred, image, mask), mask).mean()
        if self.perceptual is not None:
            parts["perceptual"] = self.perceptual(pred, target)
        if self.edge is not None:
            parts["edge"] = self.edge(pred, target)
        total = sum(self.weights[name] * value for name, value in parts.items())
        return total, parts

    def discriminator_loss(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                           image: torch.Tensor, net: nn.Module | None = None) -> torch.Tensor:
        """Hinge loss of the discriminator: real = ground truth, fake = the (detached) composite,
        scored in one forward pass of ``net`` (default: the discriminator; the trainer passes its
        DistributedDataParallel wrapper)."""
        assert self.discriminator is not None
        fake = composite(pred.detach(), image, mask)
        scores = (net or self.discriminator)(torch.cat([target, fake]), torch.cat([mask, mask]))
        real, fake_scores = scores.chunk(2)
        return F.relu(1 - real).mean() + F.relu(1 + fake_scores).mean()
