"""NDMHA generator and discriminator: the paper's size figures, shapes, range, gradients."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from ndmha.models import build_model, count_gmac, count_parameters
from ndmha.models.discriminator import PatchDiscriminator
from ndmha.models.ndmha import NDMHAGenerator


def test_parameters_near_the_papers_4_1_million() -> None:
    params = count_parameters(NDMHAGenerator())
    assert 0.9 * 4.1e6 <= params <= 1.1 * 4.1e6


def test_gmac_at_256_within_the_papers_15_01() -> None:
    """Counted as the paper most likely counted (tools without a formula for the deformable op:
    docs/architecture.md, "Counting GMAC"), within its 15.01; the deformable convs add 0.115."""
    model = NDMHAGenerator()
    without = count_gmac(model, 256, deformable=False)
    # the design target: at or under the paper's 15.01, and within 1 % of it (the widths were
    # chosen to spend the paper's budget, not a tenth of it)
    assert 0.99 * 15.01 <= without <= 15.01
    assert count_gmac(model, 256) - without == pytest.approx(deformable_gmac(model, 256),
                                                              rel=1e-12)


def deformable_gmac(model: torch.nn.Module, size: int) -> float:
    """What counting the deformable convs adds, derived from each one's shapes: a k x k conv of
    c_in / groups inputs per output value (k^2 c_in c_out h w / groups MACs)."""
    from ndmha.models.layers import DeformConv2d

    shapes = []
    hooks = [m.register_forward_hook(lambda m, i, o: shapes.append((m, o.shape)))
             for m in model.modules() if isinstance(m, DeformConv2d)]
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, size, size), torch.zeros(1, 1, size, size))
    for hook in hooks:
        hook.remove()
    # weight: (c_out, c_in / groups, k, k); the output's numel is c_out h w
    return sum(m.weight.shape[1] * m.weight.shape[2] * m.weight.shape[3] * shape.numel()
               for m, shape in shapes) / 1e9


def test_stats_command_prints_params_and_gmac(capsys: pytest.CaptureFixture) -> None:
    from ndmha.__main__ import main

    out = subprocess.run([sys.executable, "-m", "ndmha", "stats", "--model", "baseline",
                          "--size", "64"], capture_output=True, text=True, check=True).stdout
    # convs only: 64 px is exactly 1/16 of the U-Net's 256 px MACs (tests/test_baseline.py)
    gmac = round(count_gmac(build_model("baseline"), 256) / 16, 4)
    assert out.strip().splitlines()[-1] == (f"params=3835907 gmac={gmac} "  # the real command
                                            f"gmac_without_deformable={gmac}")
    for model, params in (("baseline", 3_835_907), ("ndmha", None), ("ndmha_released", None)):
        assert main(["stats", "--model", model, "--size", "64"]) == 0
        last = capsys.readouterr().out.strip().splitlines()[-1]
        fields = dict(item.split("=") for item in last.split())
        assert set(fields) == {"params", "gmac", "gmac_without_deformable"}
        assert int(fields["params"]) == (params or count_parameters(build_model(model)))
        assert float(fields["gmac"]) > 0


def test_generator_shapes_range_and_gradients() -> None:
    torch.manual_seed(0)
    model = NDMHAGenerator()
    image = torch.rand(2, 3, 32, 32)
    mask = (torch.rand(2, 1, 32, 32) > 0.6).float()
    coarse, fine = model(image * (1 - mask), mask, return_coarse=True)
    assert coarse.shape == fine.shape == (2, 3, 32, 32)
    assert fine.min() >= 0 and fine.max() <= 1
    (coarse.mean() + fine.mean()).backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert no_grad == []


def test_generator_forward_equals_fine_stage() -> None:
    torch.manual_seed(0)
    model = NDMHAGenerator().eval()
    image, mask = torch.rand(1, 3, 16, 16), (torch.rand(1, 1, 16, 16) > 0.5).float()
    with torch.no_grad():
        assert torch.equal(model(image, mask), model(image, mask, return_coarse=True)[1])


def test_coarse_output_only_matters_inside_the_holes() -> None:
    """The fine stage sees the coarse result pasted into the holes, the input elsewhere."""
    torch.manual_seed(0)
    model = NDMHAGenerator().eval()
    image, mask = torch.rand(1, 3, 16, 16), torch.zeros(1, 1, 16, 16)
    with torch.no_grad():
        a = model(image, mask)
        for p in model.coarse.parameters():
            p.add_(torch.randn_like(p))
        b = model(image, mask)
    assert torch.allclose(a, b)  # no holes: the coarse stage cannot change the result


@pytest.mark.parametrize("size", [32, 64])
def test_discriminator_patch_scores_and_spectral_norm(size: int) -> None:
    torch.manual_seed(0)
    disc = PatchDiscriminator()
    scores = disc(torch.rand(2, 3, size, size), torch.rand(2, 1, size, size))
    assert scores.shape == (2, 1, size // 16, size // 16)
    first = disc.net[0]
    for _ in range(30):  # power iterations converge in training mode
        disc(torch.rand(1, 3, size, size), torch.rand(1, 1, size, size))
    sigma = torch.linalg.matrix_norm(first.weight.detach().flatten(1), ord=2)
    # converged (seeded, so the same 31 iterations everywhere): measured 1 + 1.2e-7, float32
    # rounding; 1e-4 leaves room for matmuls that round differently on another CPU
    assert sigma == pytest.approx(1.0, abs=1e-4)


# --- the authors' released structure -----------------------------------------------------


def test_released_structure_counts() -> None:
    """The released network's figures, re-derived: 4,084,898 parameters that train, 4,123,850
    with the modulation convs the release computes and never uses, 4,127,850 with its never-applied
    BatchNorms (the paper's "4.1 M"); 4.5835 GMAC at 256 px as tools without a formula for the
    deformable op count it (the unused modulation convs included), 5.4730 with the deformable convs
    counted as convs (docs/architecture.md)."""
    from ndmha.models.released import ReleasedNDMHA

    model = build_model("ndmha_released")
    dead = ReleasedNDMHA.dead_branches(size=256)
    assert count_parameters(model) == 4_084_898
    assert count_parameters(model) + dead["modulation_parameters"] == 4_123_850
    assert count_parameters(model) + sum(v for k, v in dead.items()
                                         if k.endswith("parameters")) == 4_127_850
    without = count_gmac(model, 256, deformable=False)
    assert round(without + dead["modulation_gmac"], 2) == 4.58
    assert count_gmac(model, 256) - without == pytest.approx(deformable_gmac(model, 256),
                                                              rel=1e-12)
    # its structure: five scales of 8 ... 128 channels, 8 heads and GFF 2.33 at every scale
    widths = [layer.out_channels // 2 for layer in
              (model.coarse.encoder.stem.conv, *(d.conv for d in model.coarse.encoder.down))]
    assert widths == [8, 16, 32, 64, 128]
    assert {a.pack.heads for a in model.fine.attend} == {8}
    assert [a.feed_forward.project.in_channels for a in model.fine.attend] == \
        [int(w * 2.33) for w in (64, 32, 16, 8)]
    assert model.coarse.encoder.stem.conv.in_channels == 6  # image and mask, 3 channels each


def test_released_inputs_and_outputs_as_our_pipeline_feeds_them() -> None:
    """RGB and mask in [0, 1] in, [0, 1] out (no output activation: not clipped); the release's
    [-1, 1] mask is an option, and it changes what the fine stage sees outside the holes."""
    torch.manual_seed(0)
    unit = build_model("ndmha_released").eval()
    signed = build_model("ndmha_released", {"mask_range": "signed"}).eval()
    signed.load_state_dict(unit.state_dict())
    image, mask = torch.rand(1, 3, 32, 32), torch.zeros(1, 1, 32, 32)
    mask[..., 8:16, 8:16] = 1
    with torch.no_grad():
        coarse, fine = unit(image, mask, return_coarse=True)
        assert coarse.shape == fine.shape == (1, 3, 32, 32)
        assert not torch.equal(fine, signed(image, mask))


@pytest.mark.parametrize("options", [
    {}, {"deformable": False}, {"nested": False}, {"window": None}, {"coarse_stage": False},
    {"init": "kaiming"}, {"output": "linear"},
])
def test_each_ablation_switch_builds_and_trains_a_step(options: dict) -> None:
    torch.manual_seed(0)
    model = build_model("ndmha", options, "torch")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    target = torch.rand(2, 3, 32, 32)
    mask = (torch.rand(2, 1, 32, 32) > 0.6).float()
    coarse, fine = model(target * (1 - mask), mask, return_coarse=True)
    assert (coarse is None) == (options.get("coarse_stage") is False)
    loss = (fine - target).abs().mean()  # and the coarse output's, as the objective does
    loss = loss + ((coarse - target).abs().mean() if coarse is not None else 0)
    before = [p.detach().clone() for p in model.parameters()]
    loss.backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []  # no dead branch
    optimizer.step()
    assert all(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
    assert torch.isfinite(loss)


def test_ablations_remove_what_they_name() -> None:
    from ndmha.models.layers import DeformConv2d

    full = build_model("ndmha")
    count = lambda m, kind: sum(isinstance(x, kind) for x in m.modules())  # noqa: E731
    assert count(build_model("ndmha", {"deformable": False}), DeformConv2d) == 0
    assert count(full, DeformConv2d) == 2 * 2 * 5  # (q, kv) x (pack, unpack) x 5 NDMHALs
    assert count(build_model("ndmha", {"nested": False}), DeformConv2d) == 2 * 5
    assert build_model("ndmha", {"coarse_stage": False}).coarse is None
    assert {a.pack.window for a in build_model("ndmha", {"window": None}).fine.attend} == {None}


def test_schema_lists_every_architecture_and_its_options() -> None:
    """The config schema (what Snakemake checks before any job) and the registry (what builds
    the networks, and the training-free methods) name the same architectures and the same
    options; only the networks take loss weights."""
    from pathlib import Path

    import yaml

    from ndmha.classical import TRAINING_FREE, method_options
    from ndmha.models import ARCHITECTURES, architecture_options

    schema = yaml.safe_load((Path(__file__).resolve().parents[1] / "workflow" / "schemas"
                             / "config.schema.yaml").read_text())
    assert schema["$defs"]["architecture"]["enum"] == [*ARCHITECTURES, *TRAINING_FREE]
    for name in ARCHITECTURES:
        assert set(schema["$defs"][f"{name}_options"]["properties"]) == \
            set(architecture_options(name)), name
    for name in TRAINING_FREE:
        assert set(schema["$defs"][f"{name}_options"]["properties"]) == \
            set(method_options(name)), name
    assert set(schema["properties"]["loss"]["properties"]) == set(ARCHITECTURES)
