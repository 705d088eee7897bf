"""The guide's "Add your own network", followed as written: its code blocks applied to a copy of
the checkout (the module written, the registry and the schema edited where the guide says), then
the repository's own check that the registry and the schema agree, and the documented command
(`make run CONFIG=...`) on the demo chain, at a smoke-test size."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "guide.md"


def section_blocks(title: str) -> list[tuple[str, str]]:
    """The fenced code blocks (language, text) of one section of the guide, in order."""
    text = GUIDE.read_text()
    body = text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^```(\w+)\n(.*?)^```", body, flags=re.M | re.S)


def copy_checkout(to: Path) -> Path:
    """The checkout's files (tracked, and new ones git does not ignore) copied to ``to``."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for name in listed.splitlines():
        source = ROOT / name
        if source.is_file() and not source.is_symlink():
            (to / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, to / name)
        elif source.is_symlink():
            (to / name).parent.mkdir(parents=True, exist_ok=True)
            (to / name).symlink_to(os.readlink(source))
    return to


def apply_schema(schema_path: Path, block: str) -> None:
    """Each ``# dotted.node`` comment of the block, with the YAML under it: a mapping merged into
    that node of the schema, a list appended to it."""
    schema = yaml.safe_load(schema_path.read_text())
    for node_path, fragment in re.findall(r"^# (\S+)\n(.*?)(?=^# |\Z)", block, re.M | re.S):
        node = schema
        for part in node_path.split("."):
            node = node[part]
        value = yaml.safe_load(fragment)
        node.update(value) if isinstance(value, dict) else node.extend(value)
    schema_path.write_text(yaml.safe_dump(schema, sort_keys=False))


def apply_registry(init_path: Path, block: str) -> None:
    """The import beside the others, the entry at the end of ARCHITECTURES."""
    import_line, entry = block.strip("\n").splitlines()
    lines = init_path.read_text().splitlines()
    last_import = max(i for i, line in enumerate(lines) if line.startswith("from ndmha.models."))
    lines.insert(last_import + 1, import_line)
    start = next(i for i, line in enumerate(lines) if line.startswith("ARCHITECTURES"))
    end = next(i for i in range(start, len(lines)) if lines[i] == "}")
    lines.insert(end, entry)
    init_path.write_text("\n".join(lines) + "\n")


@pytest.mark.long
def test_a_network_added_as_the_guide_says_runs_the_demo_chain(tmp_path: Path) -> None:
    blocks = section_blocks("Add your own network")
    assert [lang for lang, _ in blocks] == ["python", "python", "yaml", "yaml", "bash"]
    (_, module), (_, registry), (_, schema), (_, overlay), (_, command) = blocks
    repo = copy_checkout(tmp_path / "checkout")
    (repo / "ndmha" / "models" / "tiny_net.py").write_text(module)           # step 1
    apply_registry(repo / "ndmha" / "models" / "__init__.py", registry)       # step 2
    apply_schema(repo / "workflow" / "schemas" / "config.schema.yaml", schema)  # step 3
    (repo / "configs" / "local").mkdir()
    (repo / "configs" / "local" / "tiny_net.yaml").write_text(overlay)        # step 4
    env = {**os.environ, "PYTHONPATH": str(repo)}

    # the repository's own check that registry and schema agree holds in the copy
    check = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                            "tests/test_ndmha_model.py", "-k", "schema"],
                           cwd=repo, capture_output=True, text=True, timeout=600, env=env)
    assert check.returncode == 0 and " passed" in check.stdout, check.stdout[-2000:]

    # the documented command, at a smoke-test size, with this environment's Python
    assert command.strip() == "make run CONFIG=configs/local/tiny_net.yaml"
    small = ("--config 'data={n_images: 12, image_size: 32}' 'split={test: 4}' "
             "'demo={image_size: 48, mask_size: 48}' 'train={epochs: 1, batch_size: 4, "
             "device: cpu}' 'resources={prepare: {threads: 1}, train: {threads: 1}, "
             "evaluate: {threads: 1}}'")
    venv = Path(sys.prefix)
    result = subprocess.run(
        ["make", "-s", "-o", str(venv / ".ndmha-installed"), *command.split()[1:],
         f"VENV={venv}", "CORES=2", f"SNAKEMAKE_ARGS={small}"],
        cwd=repo, capture_output=True, text=True, timeout=900, env=env)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    results = repo / "results" / "tiny_net"
    table = pd.read_csv(results / "tables" / "experiments.csv").set_index("experiment")
    # 4 x 8 x 9 + 8, 8 x 8 x 9 + 8, 8 x 3 x 9 + 3: the three convolutions at width 8
    assert table.loc["tiny_net", "params_m"] * 1e6 == pytest.approx(1_099)
    assert table.loc["tiny_net", "label"] == "TinyNet" and table.loc["tiny_net", "psnr"] > 0
    comparisons = pd.read_csv(results / "tables" / "comparisons.csv")
    assert {"TinyNet"} <= set(comparisons["a"])  # compared on the same images as the floor
    assert (results / "report.html").stat().st_size > 0


def test_a_make_target_without_its_config_says_what_to_do(tmp_path: Path) -> None:
    """No overlay at CONFIG yet: one line naming the file and the README's step, before any
    Snakemake or Python runs."""
    venv = Path(sys.prefix)
    result = subprocess.run(["make", "-s", "-o", str(venv / ".ndmha-installed"), "preflight",
                             f"VENV={venv}", f"CONFIG=configs/local/nothing.yaml {tmp_path}/x.yaml"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert ("error: CONFIG: configs/local/nothing.yaml does not exist: write your overlay there "
            "(README: Real data) or give CONFIG=FILE") in result.stdout + result.stderr
