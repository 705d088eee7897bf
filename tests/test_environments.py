"""Every rule names the conda environment, which lists what the package needs."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _rules() -> dict[str, str]:
    """Rule name -> its body, from workflow/rules/*.smk."""
    bodies = {}
    for smk in sorted((ROOT / "workflow" / "rules").glob("*.smk")):
        for match in re.finditer(r"^( *)rule (\w+):\n((?:\1 .*\n|\n)*)", smk.read_text(), re.M):
            bodies[match.group(2)] = match.group(3)
    return bodies


def test_every_rule_names_the_conda_env_and_its_resources() -> None:
    rules = _rules()
    assert len(rules) == 18  # and `all`, in the Snakefile, which runs nothing
    common = (ROOT / "workflow" / "rules" / "common.smk").read_text()
    env = re.search(r'^ENV = "(.+)"', common, re.M).group(1)
    assert (ROOT / "workflow" / "rules" / env).resolve() == ROOT / "envs" / "ndmha.yaml"
    for name, body in rules.items():
        assert "conda:\n" in body and "ENV" in body, name
        stage = re.search(r'threads: STUDY\.threads\("(\w+)"\)', body)
        assert stage, f"{name}: threads not read from the study's resources"
        # per-experiment evaluation rules ask for no GPU for a training-free experiment
        assert re.search(rf'\*\*rule_resources\("{stage.group(1)}"(, gpu_by_kind=True)?\)',
                         body), name


def test_conda_env_lists_the_package_dependencies() -> None:
    env = yaml.safe_load((ROOT / "envs" / "ndmha.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    listed = {re.split(r"[<>=]", p)[0].lower() for p in pip}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    needed = {re.split(r"[<>=]", p)[0].lower() for p in project} - {"snakemake"}
    assert needed <= listed


def test_snakemake_parses_the_envs_with_conda() -> None:
    if shutil.which("conda") is None and shutil.which("mamba") is None:
        pytest.skip("conda is not installed here (no conda channel is reachable from this "
                    "machine); the env file is checked statically above")
    result = subprocess.run([sys.executable, "-m", "snakemake", "--sdm", "conda", "-n"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
