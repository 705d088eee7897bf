"""bench/gpu_suite.py, the one-run GPU measurement, on the CPU at tiny sizes (--smoke): every
part runs and records its rows, the files it promises are written and nothing more."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PARTS = ["a_deform_conv", "b_train_step", "c_inference", "d_profile", "e_determinism"]


@pytest.mark.long
def test_gpu_suite_smoke_runs_every_part(tmp_path: Path) -> None:
    out = tmp_path / "suite"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_suite.py"), "--smoke",
                           "--out", str(out)], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    record = json.loads((out / "gpu_suite.json").read_text())
    assert list(record["parts"]) == PARTS and record["smoke"] is True
    for name, part in record["parts"].items():
        assert part["error"] is None and part["rows"], name
    parts = record["parts"]
    shapes = {r["shape"] for r in parts["a_deform_conv"]["rows"]}
    assert any("x32x32 " in s for s in shapes)  # full resolution (32 px in the smoke run)
    rows = parts["b_train_step"]["rows"]
    measured = [r for r in rows if "ms/step" in r]
    # every model measured at least once; the rest measured or skipped for time, said so (how
    # many fit the smoke's share depends on the machine's load)
    assert {r["model"] for r in measured} == {"baseline", "ndmha", "ndmha_released"}
    assert all("ms/step" in r or r.get("skipped") == "time share spent" for r in rows)
    assert {(r["model"], r["precision"], r["channels_last"]) for r in rows} == {
        (m, p, c) for m in ("baseline", "ndmha", "ndmha_released") for p in ("bf16", "fp32")
        for c in (True, False)}
    assert all(r["TFLOP/step"] > 0 for r in measured)
    inference = parts["c_inference"]["rows"]  # batch-1 latency and batched throughput, each
    assert {(r["model"], r["batch"]) for r in inference} == {   # model measured
        (m, b) for m in ("baseline", "ndmha", "ndmha_released") for b in (1, 2)}
    assert all(r["images/s"] > 0 for r in inference)
    shares = {r["what"]: r["share of the step"] for r in parts["d_profile"]["rows"]}
    assert 0 < shares["deformable sampling"] < 1 and 0 < shares["perceptual (VGG19)"] < 1
    determinism = parts["e_determinism"]["rows"]
    assert {(r["model"], r["deterministic"]) for r in determinism} == {
        (m, on) for m in ("baseline", "ndmha", "ndmha_released") for on in (False, True)}
    # on a CPU at a fixed thread count two runs of one seed repeat bit for bit in either mode;
    # a broken seed (initialisation, objective, batches) would make them differ
    assert all(r["repeat"] == "bitwise" and r["max abs Δw"] == 0 for r in determinism)
    assert all(r["cost over off"] > 0 for r in determinism if r["deterministic"])
    md = (out / "gpu_suite.md").read_text()
    assert all(f"## {name}" in md for name in PARTS)
    assert sorted(p.name for p in out.iterdir()) == ["gpu_suite.json", "gpu_suite.md"]
    for part in PARTS:
        assert f"== part {part}" in done.stdout  # it prints as it goes
