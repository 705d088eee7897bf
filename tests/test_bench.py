"""Every benchmark still runs: each script at its smallest size on the CPU (the figures are not
checked, only that it runs to its table). gpu_suite, gpu_study and scale have their own tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: the smallest run of each script: one or two timed repeats at 16-32 px
RUNS = {
    "cpu_step": ["--size", "16", "--batch", "2", "--rounds", "1", "--warmup", "0",
                 "--backends", "fused"],
    "data_prep": ["--n", "6", "--size", "64", "--out-size", "32", "--threads", "2"],
    "deform_conv": ["--size", "16", "--batch", "1", "--repeat", "1", "--device", "cpu"],
    "inference": ["--size", "32", "--batches", "1", "--repeat", "1", "--no-compile",
                  "--models", "baseline", "ndmha", "--device", "cpu"],
    "learning": ["--size", "32", "--batch", "2", "--images", "8", "--steps", "2"],
    "step_profile": ["--size", "16", "--batch", "2", "--steps", "1", "--backends", "fused",
                     "--objective", "l1"],
    "step_shares": ["--size", "16", "--batch", "2", "--repeat", "1", "--device", "cpu"],
    "train_step": ["--size", "32", "--batches", "2", "--repeat", "1", "--no-compile",
                   "--models", "baseline", "--device", "cpu"],
    "determinism": ["--device", "cpu", "--size", "32", "--batch", "2", "--steps", "2",
                    "--mode", "off"],
    "objective": ["--batches", "1", "--batch", "2", "--split", "test"],
    "realism": [],
}
NEEDS_MANIFEST = {"objective", "realism"}


@pytest.mark.parametrize("script", RUNS)
def test_benchmark_runs_at_its_smallest_size(script: str, manifest: Path) -> None:
    args = [*RUNS[script], *(["--manifest", str(manifest)] if script in NEEDS_MANIFEST else [])]
    done = subprocess.run([sys.executable, str(ROOT / "bench" / f"{script}.py"), *args],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, (done.stdout + done.stderr)[-2000:]
    assert "|" in done.stdout or "{" in done.stdout, done.stdout[-1000:]  # its table or JSON
