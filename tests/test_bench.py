"""Every benchmark and study script still runs: each at its smallest size on the CPU (the figures
are not checked, only that it runs to its table). gpu_suite, gpu_study and scale have their own
tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: the smallest run of each script: one or two timed repeats at 16-32 px
RUNS = {
    "data_prep": ["--n", "6", "--size", "64", "--out-size", "32", "--threads", "2"],
    "deform_conv": ["--size", "16", "--batch", "1", "--repeat", "1", "--device", "cpu"],
    "inference": ["--size", "32", "--batches", "1", "--repeat", "1", "--no-compile",
                  "--models", "baseline", "ndmha", "--device", "cpu"],
    "train_step ratios": ["--size", "16", "--batch", "2", "--repeat", "1", "--warmup", "0",
                          "--backends", "fused"],
    "train_step terms": ["--size", "16", "--batch", "2", "--repeat", "1", "--device", "cpu"],
    "train_step variants": ["--size", "32", "--batches", "2", "--repeat", "1", "--no-compile",
                            "--models", "baseline", "--device", "cpu"],
    "train_step profile": ["--size", "16", "--batch", "2", "--repeat", "1", "--backends",
                           "fused", "--objective", "l1"],
    "train_step determinism": ["--device", "cpu", "--size", "32", "--batch", "2", "--repeat",
                               "2", "--mode", "off"],
    "study/learning": ["--size", "32", "--batch", "2", "--images", "8", "--steps", "2"],
    "study/objective": ["--batches", "1", "--batch", "2", "--split", "test"],
    "study/realism": [],
}
NEEDS_MANIFEST = {"study/objective", "study/realism"}


@pytest.mark.parametrize("script", RUNS)
def test_benchmark_runs_at_its_smallest_size(script: str, manifest: Path) -> None:
    args = [*RUNS[script], *(["--manifest", str(manifest)] if script in NEEDS_MANIFEST else [])]
    path, *part = script.split(" ")  # bench/<name>.py (a part its first argument), study/...
    path = ROOT / (path if "/" in path else f"bench/{path}")
    done = subprocess.run([sys.executable, f"{path}.py", *part, *args],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, (done.stdout + done.stderr)[-2000:]
    assert "|" in done.stdout or "{" in done.stdout, done.stdout[-1000:]  # its table or JSON
