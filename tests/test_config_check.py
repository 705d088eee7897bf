"""The config check (``ndmha.config.check_config``) without Snakemake: what JSON schema cannot
say, each bad config one error that names its key. The workflow calls the same function when it
builds its DAG (tests/test_workflow.py runs that path)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from ndmha.config import check_config
from ndmha.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
DEMO = yaml.safe_load((ROOT / "config.yaml").read_text())


def edited(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    cfg = copy.deepcopy(DEMO)
    change(cfg)
    return cfg


def test_the_demo_config_passes() -> None:
    experiments = check_config(copy.deepcopy(DEMO))
    assert {"baseline", "ndmha"} <= set(experiments)


CASES = {
    "split.test": lambda c: c["split"].update(test=c["data"]["n_images"]),
    "split.val": lambda c: c["split"].update(test=c["data"]["n_images"] // 2,
                                             val=c["data"]["n_images"] // 2),
    "split.scheme": lambda c: c["split"].update(scheme="lists"),
    "data.images_dir": lambda c: c["data"].update(source="folders", images_dir=""),
    "data.masks_dir": lambda c: c["data"].update(source="folders", images_dir=str(ROOT),
                                                 masks_dir="/no/such/folder"),
    "demo": lambda c: c.pop("demo"),
}


@pytest.mark.parametrize("key", CASES)
def test_a_bad_config_names_its_key(key: str) -> None:
    with pytest.raises(ConfigError) as err:
        check_config(edited(CASES[key]))
    assert str(err.value).startswith(f"config key {key}: "), str(err.value)


def test_a_layout_applies_to_the_users_folder_only() -> None:
    """configs/seed_report.yaml reads CelebA-HQ by its index; laid over with the demo (its
    header's switch), the demo's own PNGs are read as PNGs."""
    from ndmha.config import folder_layout

    real = edited(lambda c: c["data"].update(source="folders", layout="celebahq"))
    assert folder_layout(real) == "celebahq"
    assert folder_layout(edited(lambda c: c["data"].update(layout="celebahq"))) == "png"
