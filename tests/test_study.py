"""The resolved study (``ndmha.study``): one read of a config, its defaults from the schema alone,
and the arguments each stage takes named as the stage's own function names them."""

from __future__ import annotations

import copy
import inspect
from pathlib import Path

import pytest
import yaml

from ndmha.errors import ConfigError
from ndmha.study import SCHEMA, SLURM_PROFILE, load, read, validate

ROOT = Path(__file__).resolve().parents[1]


def schema_defaults(node: dict, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], object]:
    """Every ``default:`` the schema states under plain ``properties`` (not under $defs), by key."""
    found = {}
    for name, sub in node.get("properties", {}).items():
        if "default" in sub:
            found[(*path, name)] = sub["default"]
        found.update(schema_defaults(sub, (*path, name)))
    return found


def test_every_schema_default_reaches_a_config_that_leaves_its_key_out(tmp_path: Path) -> None:
    """The demo config with every defaulted key removed resolves to the schema's defaults: the
    schema is where a left-out key's value comes from (a default written in code instead would
    leave the key out of the resolved config)."""
    defaults = schema_defaults(yaml.safe_load(SCHEMA.read_text()))
    assert {("cluster", "signal_minutes"), ("data", "mask_protocol"), ("data", "protocol"),
            ("split", "val"), ("data", "layout")} <= set(defaults)
    bare = yaml.safe_load((ROOT / "config.yaml").read_text())
    for key in defaults:
        parent = bare
        for part in key[:-1]:
            parent = parent.get(part) if isinstance(parent, dict) else None
        if isinstance(parent, dict):
            parent.pop(key[-1], None)
    (tmp_path / "bare.yaml").write_text(yaml.safe_dump(bare))
    config = load([tmp_path / "bare.yaml"]).config
    checked = 0
    for key, default in defaults.items():
        parent = config
        for part in key[:-1]:
            parent = parent.get(part) if isinstance(parent, dict) else None
        # a value (a section's {} is filled in below), in a section the config has
        if isinstance(parent, dict) and not isinstance(default, dict):  # (places2: on Places2)
            assert parent[key[-1]] == default, key
            checked += 1
    assert checked >= 15, checked


def test_the_stages_take_the_arguments_the_study_hands_them() -> None:
    """Each argument set names parameters of the function the rule and the preflight call with
    it: a renamed parameter (hole for mask_hole) fails here, not in a job."""
    from ndmha.data.demo import make_demo_dataset
    from ndmha.data.prepare import convert_listed, prepare_listed
    from ndmha.data.sources import convert_shard, masks_shard, plan_sources
    from ndmha.data.split import make_split
    from ndmha.evaluate import score

    demo = load(overrides=["data={source: demo}"])
    study = load()
    takes = {
        "demo_arguments": [make_demo_dataset], "plan_arguments": [plan_sources],
        "convert_arguments": [convert_shard, convert_listed],
        "mask_arguments": [masks_shard, prepare_listed], "split_arguments": [make_split],
        "metric_arguments": [score]}
    for name, functions in takes.items():
        given = set(getattr(demo if name == "demo_arguments" else study, name))
        for function in functions:
            assert given <= set(inspect.signature(function).parameters), (name, function)
    from ndmha.data.packs import build

    pack = load(overrides=["data={mask_protocol: mat-large}"])
    assert pack.pack == "mat-large" and study.pack is None
    assert set(pack.pack_arguments) <= set(inspect.signature(build).parameters)
    assert study.mask_arguments["mask_hole"] == study.config["data"]["mask_hole"]
    assert study.plan_arguments["mask_hole"] == study.data.mask_hole


def test_a_training_jobs_submissions_come_from_the_profile_unless_the_config_says() -> None:
    retries = yaml.safe_load(SLURM_PROFILE.read_text())["retries"]
    assert load().cluster.submissions == retries + 1
    assert load(overrides=["cluster={train_submissions: 6}"]).cluster.submissions == 6


def test_files_and_overrides_merge_as_snakemake_merges_them(tmp_path: Path) -> None:
    from snakemake.utils import update_config

    base = yaml.safe_load((ROOT / "config.yaml").read_text())
    over = {"train": {"epochs": 7}, "models": ["baseline"], "split": {"test": 10}}
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(base))
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(over))
    expected = copy.deepcopy(base)
    update_config(expected, over)
    update_config(expected, {"train": {"batch_size": 2}})
    assert read([tmp_path / "a.yaml", tmp_path / "b.yaml"], ["train={batch_size: 2}"]) == expected


@pytest.mark.parametrize("change, message", [
    ({"cluster": {"signal_minutes": 0}}, "config key cluster.signal_minutes: 0 is less than"),
    ({"data": {"mask_protocol": "lama"}}, "config key data.mask_protocol: 'lama' is not one of"),
    ({"split": {"val": -1}}, "config key split.val: -1 is less than"),
])
def test_a_bad_value_is_one_line_naming_its_key(change: dict, message: str) -> None:
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    for section, values in change.items():
        cfg.setdefault(section, {}).update(values)
    with pytest.raises(ConfigError) as error:
        validate(cfg)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)
