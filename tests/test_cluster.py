"""The workflow on a real SLURM scheduler: a one-node cluster started on this machine.

Skips, with the reason, where the cluster cannot be started (no root, no apt, no SLURM) or the
executor plugin is missing. tests/cluster/start_slurm.sh documents the setup.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from test_workflow import ROOT, TINY, snakemake_command

CLUSTER = ROOT / "tests" / "cluster"
# sacct needs slurmdbd: the test cluster has no accounting, so jobs are followed with squeue
SLURM_ARGS = ["--workflow-profile", str(ROOT / "workflow" / "profiles" / "slurm"),
              "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks",
              "1", "--slurm-no-account", "--slurm-keep-successful-logs", "--latency-wait", "5",
              "--seconds-between-status-checks", "1"]
# the data stages in four shards: four jobs each on the cluster, gathered by one
SHARDS = 4
CONFIG = {**TINY, "models": ["baseline"], "data": {**TINY["data"], "shards": SHARDS}}


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> None:
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError as err:
        pytest.skip(f"snakemake-executor-plugin-slurm is not installed: {err}")
    already = shutil.which("sinfo") and subprocess.run(
        ["sinfo", "-h", "-o", "%t"], capture_output=True, text=True).stdout.strip() == "idle"
    state = tmp_path_factory.mktemp("slurm-state")
    if not already:
        # the one node gets the CPUs this process may run on (start_slurm.sh: nproc); a job asking
        # for more pends forever (PartitionConfig), e.g. under taskset -c 0 beside a training run
        usable = len(os.sched_getaffinity(0))
        needed = max(r.get("threads", 1) for r in CONFIG["resources"].values())
        if usable < needed:
            pytest.skip(f"this process may use {usable} CPU(s) and a job asks for {needed}: "
                        "a one-node SLURM here could not schedule it")
        started = subprocess.run(["bash", str(CLUSTER / "start_slurm.sh"), str(state)],
                                 capture_output=True, text=True, timeout=600)
        if started.returncode != 0:
            pytest.skip(f"cannot start a SLURM cluster here: {started.stderr.strip()[-500:]}")
    yield
    if not already:
        subprocess.run(["bash", str(CLUSTER / "stop_slurm.sh"), str(state)], check=False)


def run(workdir: Path, config: dict, *args: str, background: bool = False):
    cmd = snakemake_command(workdir, config, *args)
    if background:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def slurm_run(slurm: None, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    workdir = tmp_path_factory.mktemp("on-slurm")
    result = run(workdir, CONFIG, *SLURM_ARGS)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return workdir, result.stdout + result.stderr


@pytest.mark.long
def test_every_rule_ran_as_a_slurm_job(slurm_run: tuple[Path, str]) -> None:
    workdir, output = slurm_run
    submitted = re.findall(r"has been submitted with SLURM jobid (\d+) \(log: (.+?)\)", output)
    rules = {Path(log).relative_to(workdir / ".snakemake" / "slurm_logs").parts[0]
             for _, log in submitted}
    sharded = {"convert", "masks", "overlay"}
    expected = {"demo_data", "sources", "gather", "split", "data_figure", "train",
                "predict", "metrics", "training_curves", "prediction_grid", "comparison_figures",
                "tables", "comparison_forest", *sharded}
    assert rules == {f"rule_{r}" for r in expected}
    assert len({job for job, _ in submitted}) == len(submitted) == \
        len(expected) + (SHARDS - 1) * len(sharded)
    for rule in sharded:  # one job per shard, each its own SLURM job
        jobs = [log for _, log in submitted if f"rule_{rule}/" in log]
        assert len(jobs) == SHARDS
    for _, log in submitted:  # each job ran Snakemake's SLURM job step on the node
        assert "--executor slurm-jobstep" in Path(log).read_text()


def test_outputs_equal_a_local_run(slurm_run: tuple[Path, str], tmp_path: Path) -> None:
    """The SLURM run (four shards a stage) against a local unsharded one: every data file the
    same bytes, the metrics and the training log the same."""
    workdir, _ = slurm_run
    unsharded = {**CONFIG, "data": {**CONFIG["data"], "shards": 1}}
    local = run(tmp_path, unsharded, "--cores", "2")
    assert local.returncode == 0, local.stderr[-3000:]
    a, b = workdir / CONFIG["results_dir"], tmp_path / CONFIG["results_dir"]
    files = [p.relative_to(a) for p in sorted((a / "data").rglob("*")) if p.is_file()]
    assert files == [p.relative_to(b) for p in sorted((b / "data").rglob("*")) if p.is_file()]
    assert [f for f in files if (a / f).read_bytes() != (b / f).read_bytes()] == []
    assert (a / "data" / "manifest.csv").read_bytes() == (b / "data" / "manifest.csv").read_bytes()
    for path in ("metrics/baseline/per_image.csv", "metrics/baseline/buckets.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(a / path), pd.read_csv(b / path))
    from ndmha.train import TIMING_COLUMNS

    logs = [pd.read_csv(r / "models/baseline/train_log.csv").drop(columns=TIMING_COLUMNS)
            for r in (a, b)]
    pd.testing.assert_frame_equal(*logs)
    summary_a = json.loads((a / "metrics/baseline/summary.json").read_text())
    summary_b = json.loads((b / "metrics/baseline/summary.json").read_text())
    assert summary_a["psnr"] == summary_b["psnr"] and summary_a["ssim"] == summary_b["ssim"]


@pytest.mark.long
def test_scancelled_training_resumes_from_its_checkpoint(slurm_run: tuple[Path, str],
                                                        tmp_path: Path) -> None:
    """scancel the training job (SIGTERM), then its resubmission with SIGUSR1 (what
    ``--signal=USR1@...`` sends before a time limit): each stops after its step with a
    checkpoint, the profile submits it again (``retries: 2``: three submissions), and the third
    submission ends with the weights of an uninterrupted run."""
    prepared = tmp_path / "slurm"
    shutil.copytree(slurm_run[0], prepared, dirs_exist_ok=True,  # the data are prepared already
                    ignore=shutil.ignore_patterns("slurm_logs", "locks", "incomplete"))
    results = prepared / CONFIG["results_dir"]
    for name in ("last.pt", "last.pt.prev"):  # the copied run's checkpoints: retrain
        (results / "checkpoints" / "baseline" / name).unlink(missing_ok=True)
    uninterrupted = tmp_path / "local"
    shutil.copytree(prepared, uninterrupted)
    config = {**CONFIG, "train": {**CONFIG["train"], "epochs": 40}}
    process = run(prepared, config, *SLURM_ARGS, "--until", "train", background=True)
    logs = prepared / ".snakemake" / "slurm_logs" / "rule_train"
    train_log = results / "logs" / "train_baseline.log"

    def wait_for(done) -> None:
        deadline = time.monotonic() + 600
        while not done():
            assert process.poll() is None, process.stdout.read()[-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.05)

    wait_for(lambda: (results / "checkpoints" / "baseline" / "last.pt").exists())
    (first,) = [p.stem for p in logs.rglob("*.log")]
    subprocess.run(["scancel", first], check=True)
    wait_for(lambda: len(list(logs.rglob("*.log"))) == 2 and train_log.exists()
             and "resuming" in train_log.read_text() and "INFO epoch" in train_log.read_text())
    (second,) = [p.stem for p in logs.rglob("*.log") if p.stem != first]
    subprocess.run(["scancel", "--signal=USR1", second], check=True)
    output, _ = process.communicate(timeout=900)
    assert process.returncode == 0, output[-4000:]
    jobs = sorted(p.stem for p in logs.rglob("*.log"))
    assert len(jobs) == 3, output[-3000:]  # submitted again after each stop
    # the signal reaches the training process through srun: it finishes its step, writes the
    # checkpoint (mid-epoch, or the epoch's own when it came during validation), exits 75
    for job, name in ((first, "SIGTERM"), (second, "SIGUSR1")):
        (job_log,) = logs.rglob(f"{job}.log")
        assert f"stopped by {name}" in job_log.read_text(), job_log.read_text()[-3000:]
    assert re.search(r"resuming baseline from .* (after epoch \d+|in epoch \d+, after its "
                     r"batch \d+)", train_log.read_text())
    history = pd.read_csv(results / "models" / "baseline" / "train_log.csv")
    assert list(history["epoch"]) == list(range(1, 41))
    local = run(uninterrupted, config, "--cores", "2", "--until", "train")
    assert local.returncode == 0, local.stderr[-3000:]
    a = torch.load(results / "models" / "baseline" / "model.pt", weights_only=True)
    b = torch.load(uninterrupted / CONFIG["results_dir"] / "models" / "baseline" / "model.pt",
                   weights_only=True)
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
