"""Shared fixtures: a tiny prepared dataset built with the package's own data functions."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import pytest
import torch
from torch import nn

from ndmha.data.demo import make_demo_dataset
from ndmha.data.prepare import convert_images, overlay_masks, prepare_masks
from ndmha.data.split import make_split

ROOT = Path(__file__).resolve().parents[1]

# pytest-timeout's 900 s (pyproject.toml) is a hang guard, not a speed check. A few tests train or
# run the whole workflow and take 90-232 s on 2 AMD EPYC cores with both cores kept busy by a
# background load (SLURM fixture 189-232 s, scancel-resume 221 s, 200 NDMHA steps 152-174 s,
# seed-report protocol 144-157 s, scale rehearsal 97-99 s, the tiny workflow run 90 s). Under
# heavier oversubscription (two whole suites and two busy loops on 2 cores) the 200-step test ran
# at 6-12 s per step instead of 0.7 and hit the 900 s guard. Tests marked `long` get 2400 s:
# about 10x the longest of those measurements, so only a real hang trips it.
LONG_TIMEOUT_S = 2400


def pytest_configure(config: pytest.Config) -> None:
    # an empty torch hub cache for the whole run (the workflow's subprocesses too): the files a
    # developer's torchvision put in ~/.cache/torch must not change what the tests see
    os.environ["TORCH_HOME"] = tempfile.mkdtemp(prefix="ndmha-test-torch-home-")
    config.addinivalue_line("markers", "long: trains or runs the workflow; hang guard "
                            f"{LONG_TIMEOUT_S} s instead of the default")


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(os.environ.get("TORCH_HOME", ""), ignore_errors=True) \
        if "ndmha-test-torch-home-" in os.environ.get("TORCH_HOME", "") else None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("long") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(LONG_TIMEOUT_S))


@pytest.fixture(autouse=True)
def process_backend() -> Iterator[None]:
    """The deformable-conv backend a test sets for its process (an entry point's
    set_backend, in-process) ends with the test."""
    from ndmha.models.layers import BACKEND_ENV

    before = os.environ.get(BACKEND_ENV)
    yield
    if before is None:
        os.environ.pop(BACKEND_ENV, None)
    else:
        os.environ[BACKEND_ENV] = before


@pytest.fixture(scope="session")
def demo_source(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """12 demo faces (48 px) and 12 masks (48 px) as PNG."""
    root = tmp_path_factory.mktemp("demo_source")
    make_demo_dataset(root / "images", root / "masks", n_images=12, n_masks=12, size=48,
                      mask_size=48, seed=3)
    return {"images": root / "images", "masks": root / "masks"}


@pytest.fixture(scope="session")
def manifest(tmp_path_factory: pytest.TempPathFactory, demo_source: dict[str, Path]) -> Path:
    """The full preparation chain on the demo source at 32 px: returns the split manifest."""
    root = tmp_path_factory.mktemp("prepared")
    convert_images(demo_source["images"], root / "images", n_images=12, size=32)
    prepare_masks(demo_source["masks"], root / "masks", n_masks=12, size=32)
    overlay_masks(root / "images", root / "masks", root / "corrupted", root / "pairs.csv")
    make_split(root / "pairs.csv", root / "manifest.csv", scheme="paper", seed=0, test=4)
    return root / "manifest.csv"


@pytest.fixture
def trust(monkeypatch: pytest.MonkeyPatch):
    """Make a stand-in file (random weights saved here) the published one of a registry entry
    for this test: its SHA-256 prefix goes into the entry's file name, so that the real hash
    check accepts it."""
    from ndmha import weights

    def register(name: str, path: Path) -> Path:
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        spec = weights.REGISTRY[name]
        monkeypatch.setitem(weights.REGISTRY, name, weights.Weights(
            name, f"{name}-{sha[:8]}.pth", spec.url, spec.use))
        return path

    return register


@pytest.fixture(scope="session")
def alexnet_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random AlexNet saved as a torchvision checkpoint: stands in for the ImageNet one."""
    import torchvision.models as tvm

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "alexnet.pth"
    torch.save(tvm.alexnet(weights=None).state_dict(), path)
    return path


@pytest.fixture(scope="session")
def inception_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random torch-fidelity Inception-v3 saved where its real weights would be."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    root = tmp_path_factory.mktemp("inception")
    torch.save({}, root / "empty.pth")
    load = FeatureExtractorInceptionV3.load_state_dict
    FeatureExtractorInceptionV3.load_state_dict = lambda self, *a, **k: None  # build unloaded
    try:
        net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                          feature_extractor_weights_path=str(root / "empty.pth"))
    finally:
        FeatureExtractorInceptionV3.load_state_dict = load
    torch.manual_seed(0)
    for module in net.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(module.weight)
        elif isinstance(module, nn.BatchNorm2d):
            module.reset_parameters()
            module.reset_running_stats()
    torch.save(net.state_dict(), root / "pt_inception.pth")
    return root / "pt_inception.pth"
