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
from ndmha.study import validate

ROOT = Path(__file__).resolve().parents[1]
DEMO = yaml.safe_load((ROOT / "config.yaml").read_text())


def edited(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """The demo config, changed, then validated (its defaults filled in, as the study does)."""
    cfg = copy.deepcopy(DEMO)
    change(cfg)
    validate(cfg)
    return cfg


def test_the_demo_config_passes() -> None:
    experiments = check_config(edited(lambda c: None))
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


def test_compose_lays_a_config_over_its_base(tmp_path: Path) -> None:
    """Mappings merge key by key, lists are replaced, a layer's experiments replace its base's
    models, a top-level null removes the key; a loop or a missing base is one error."""
    from ndmha.config import compose

    (tmp_path / "base.yaml").write_text(yaml.safe_dump(
        {"a": {"x": 1, "y": 2}, "models": ["m"], "seeds": [0], "l": [1, 2]}))
    (tmp_path / "mid.yaml").write_text(yaml.safe_dump(
        {"extends": "base.yaml", "a": {"y": 3}, "l": [9]}))
    top = {"extends": "mid.yaml", "experiments": {"e": {}}, "seeds": None}
    assert compose(top, tmp_path) == {"a": {"x": 1, "y": 3}, "l": [9], "experiments": {"e": {}}}
    assert top["extends"] == "mid.yaml"  # the caller's dict is left as it was
    # and the other way round: a layer's models replace its base's experiments
    (tmp_path / "named.yaml").write_text(yaml.safe_dump({"experiments": {"e": {}}, "seeds": [0]}))
    assert compose({"extends": "named.yaml", "models": ["m"]}, tmp_path) == {
        "models": ["m"], "seeds": [0]}
    (tmp_path / "loop.yaml").write_text("extends: loop.yaml\n")
    with pytest.raises(ConfigError, match="config key extends: loop.yaml extends itself"):
        compose({"extends": "loop.yaml"}, tmp_path)
    with pytest.raises(ConfigError, match="config key extends: .*nope.yaml"):
        compose({"extends": "nope.yaml"}, tmp_path)


SHIPPED = sorted([*(ROOT / "configs").glob("*.yaml"), *(ROOT / "configs").glob("protocols/*.yaml")])


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_each_shipped_config_is_an_overlay_that_composes(path: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Every config but config.yaml is laid over another (``extends``), down to config.yaml, and
    states only a part of what it runs with; composed, it passes the schema and the config check
    (its data folders made here, relative to the run's folder). The dry runs of each:
    tests/test_workflow.py and tests/test_protocols.py, demo_places2's below."""
    from snakemake.utils import validate

    from ndmha.config import compose

    raw = yaml.safe_load(path.read_text())
    chain, name = [], raw.get("extends")
    while name:
        chain.append(name)
        name = yaml.safe_load((ROOT / name).read_text()).get("extends")
    assert chain and chain[-1] == "config.yaml", chain
    cfg = compose(raw, ROOT)
    assert "extends" not in cfg and set(raw) - {"extends"} < set(cfg)
    validate(cfg, str(ROOT / "workflow" / "schemas" / "config.schema.yaml"))
    monkeypatch.chdir(tmp_path)
    data = cfg["data"]
    for key in ("images_dir", "masks_dir"):
        if data["source"] != "demo" and data.get(key):
            Path(data[key]).mkdir(parents=True)
    if data["source"] == "places2":
        root = Path(data["places2"]["root"])
        root.mkdir(parents=True)
        for listing in ("train_list", "val_list"):
            (root / data["places2"][listing]).write_text("")
    split = cfg["split"]
    if split["scheme"] == "celeba" and "celeba" not in split:  # the user's overlay gives them
        split["celeba"] = {"image_list": "image_list.txt", "partition": "partition.txt"}
        for listing in split["celeba"].values():
            Path(listing).write_text("")
    if split["scheme"] == "ids":  # relative to the repository, where make runs
        split["test_ids"] = str(ROOT / split["test_ids"])
    assert check_config(cfg)


def test_the_places2_demo_config_dry_runs_alone(tmp_path: Path) -> None:
    """configs/demo_places2.yaml names config.yaml as its base, so it runs without it on the
    command line: its two shards of each data stage, and the rest of the demo's jobs."""
    import re

    from test_workflow import _dry_run

    result = _dry_run(tmp_path, "--configfile", str(ROOT / "configs" / "demo_places2.yaml"))
    assert result.returncode == 0, result.stderr[-2000:]
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", result.stdout, re.M))
    assert jobs["convert"] == jobs["overlay"] == "2" and jobs["train"] == "2", jobs


@pytest.mark.parametrize("data, protocol", [
    ({}, "none"),                                                        # the demo
    ({"source": "folders", "layout": "png"}, "none"),
    ({"source": "folders", "layout": "celebahq"}, "celebahq-qdimd"),
    ({"source": "places2"}, "places2-nvidia"),
    ({"layout": "celebahq"}, "none"),            # the demo laid over a CelebA-HQ config
    ({"source": "folders", "layout": "celebahq", "protocol": "none"}, "none"),
    ({"protocol": "celebahq-qdimd", "name": "anything"}, "celebahq-qdimd"),
])
def test_the_protocol_the_scorecard_tests_on(data: dict, protocol: str) -> None:
    from ndmha.config import data_protocol

    assert data_protocol(edited(lambda c: c["data"].update(data))) == protocol
