"""The four loss terms: known values, finiteness, the perceptual weights rule."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from ndmha.errors import ConfigError
from ndmha.losses import EDGE_EPS, Objective, PerceptualLoss, PerceptualSettings, SobelEdgeLoss


def test_edge_loss_known_values_and_finite_gradient_on_flat_images() -> None:
    edge = SobelEdgeLoss()
    flat = torch.full((1, 3, 8, 8), 0.5, requires_grad=True)
    loss = edge(flat, torch.full((1, 3, 8, 8), 0.5))
    assert float(loss.detach()) == 0.0  # both magnitudes are sqrt(eps), exactly
    loss.backward()
    assert torch.isfinite(flat.grad).all()  # the report's 0/0: sqrt'(0) without eps is inf
    step = torch.zeros(1, 3, 8, 8)
    step[..., 4:] = 1.0  # vertical edge: Sobel gx = 4 on the two columns beside it
    magnitude = edge.magnitude(step)[0, 0]
    # sqrt(16 + eps) = 4 + eps / 8 = 4 + 1.25e-7; float32 rounds at 4.8e-7 near 4
    assert magnitude[:, 3:5] == pytest.approx(torch.full((8, 2), 4.0), abs=1e-6)
    assert magnitude[:, 0] == pytest.approx(torch.full((8,), EDGE_EPS ** 0.5), rel=1e-6)


def test_perceptual_missing_weights_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "vgg19.pth"
    with pytest.raises(ConfigError, match=f"perceptual.vgg19_weights: .*{missing}"):
        PerceptualLoss(PerceptualSettings(vgg19_weights=str(missing)))


def test_perceptual_random_weights_only_when_allowed(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="ndmha"):
        loss = PerceptualLoss(PerceptualSettings(allow_random_perceptual=True))
    assert loss.random_weights and "RANDOM VGG19" in caplog.text
    x = torch.rand(1, 3, 32, 32)
    assert float(loss(x, x)) == 0.0
    assert float(loss(x, torch.rand(1, 3, 32, 32))) > 0
    assert not any(p.requires_grad for p in loss.parameters())


def test_perceptual_loads_a_local_checkpoint(tmp_path: Path, trust) -> None:
    from torchvision.models import vgg19

    torch.manual_seed(0)
    reference = vgg19(weights=None)
    torch.save(reference.state_dict(), tmp_path / "vgg19.pth")
    trust("vgg19", tmp_path / "vgg19.pth")
    loss = PerceptualLoss(PerceptualSettings(vgg19_weights=str(tmp_path / "vgg19.pth")))
    assert not loss.random_weights
    assert torch.equal(loss.features.get_submodule("0").weight, reference.features[0].weight)


def test_perceptual_refuses_a_file_that_is_not_the_published_one(tmp_path: Path) -> None:
    """A VGG19 checkpoint, but not torchvision's bytes: named, not used; random weights only
    where they are allowed."""
    from torchvision.models import vgg19

    torch.save(vgg19(weights=None).state_dict(), tmp_path / "vgg19-dcbb9e9d.pth")
    settings = PerceptualSettings(vgg19_weights=str(tmp_path / "vgg19-dcbb9e9d.pth"))
    with pytest.raises(ConfigError, match="is not vgg19-dcbb9e9d.pth: its SHA-256 starts"):
        PerceptualLoss(settings)
    settings.allow_random_perceptual = True
    assert PerceptualLoss(settings).random_weights


def test_objective_terms_weights_and_discriminator() -> None:
    torch.manual_seed(0)
    weights = {"l1": 1.0, "adversarial": 0.1, "perceptual": 0.5, "edge": 2.0}
    objective = Objective(weights, perceptual=PerceptualSettings(allow_random_perceptual=True))
    target = torch.rand(2, 3, 32, 32)
    mask = (torch.rand(2, 1, 32, 32) > 0.5).float()
    image = target * (1 - mask)
    pred = torch.rand(2, 3, 32, 32, requires_grad=True)
    coarse = torch.rand(2, 3, 32, 32)
    total, parts = objective(pred, target, mask, image, coarse)
    assert set(parts) == set(weights)
    values = {k: float(v.detach()) for k, v in parts.items()}
    # float32 sums of four terms against the same sum in float64: a few roundings of 6e-8 each
    assert float(total.detach()) == pytest.approx(sum(weights[k] * v for k, v in values.items()),
                                                  rel=1e-6)
    l1_fine_coarse = (pred - target).abs().mean() + (coarse - target).abs().mean()
    # F.l1_loss may reduce in another order than .mean(): float32 rounding, 6e-8 per step
    assert values["l1"] == pytest.approx(float(l1_fine_coarse.detach()), rel=1e-6)
    total.backward()
    assert torch.isfinite(pred.grad).all()
    d_loss = objective.discriminator_loss(pred, target, mask, image)
    assert float(d_loss.detach()) >= 0  # hinge: a sum of two ReLUs
    assert objective.warnings == ["perceptual loss used random VGG19 weights (no checkpoint given)"]


def test_terms_without_weight_are_not_built() -> None:
    objective = Objective({"l1": 1.0})
    assert objective.discriminator is None and objective.perceptual is None
    assert objective.edge is None and objective.warnings == []
    with pytest.raises(ConfigError, match="loss: at least one"):
        Objective({})
