"""A local run's GPUs: counted without torch, one network job per device at a time, each job on
its own id. No GPU here: stand-in devices are given as ``--resources gpu=N`` (as a user with a
machine Snakemake cannot count would), and the jobs' logs say which id each saw and when it ran."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ndmha import gpus
from test_workflow import ROOT, _with



@pytest.mark.parametrize("value, ids", [(None, None), ("", []), ("1", ["1"]),
                                        ("2,3", ["2", "3"]), ("0,-1,2", ["0"]),
                                        ("-1", []), (" 0 , 1 ", ["0", "1"])])
def test_cuda_visible_devices_as_cuda_reads_it(value: str | None, ids: list[str] | None) -> None:
    environ = {} if value is None else {"CUDA_VISIBLE_DEVICES": value}
    assert gpus.visible_ids(environ) == ids


def test_the_count_comes_from_nvidia_smi_or_the_environment(tmp_path: Path) -> None:
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H100 (UUID: GPU-a)'\n"
                   "echo 'GPU 1: NVIDIA H100 (UUID: GPU-b)'\necho '  MIG 1g.10gb Device 0'\n")
    smi.chmod(0o755)
    path = {"PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"}
    old = os.environ["PATH"]
    try:
        os.environ["PATH"] = path["PATH"]
        assert gpus.detect({}) == ["0", "1"]
        assert gpus.detect({"CUDA_VISIBLE_DEVICES": "1"}) == ["1"]  # the user's choice wins
        smi.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n")
        assert gpus.detect({}) == []
        os.environ["PATH"] = str(tmp_path / "nowhere")
        assert gpus.detect({}) == []  # no driver, no GPUs
    finally:
        os.environ["PATH"] = old


@pytest.mark.parametrize("detected, given, pool", [
    (["0", "1"], None, ["0", "1"]), ([], 2, ["0", "1"]), (["2", "3"], 1, ["2"]),
    (["0"], 3, ["0", "1", "2"]), (["5"], 2, ["5", "0"]), (["0", "1"], 0, [])])
def test_the_pool(detected: list[str], given: int | None, pool: list[str]) -> None:
    assert gpus.pool(detected, given) == pool


def test_claims_are_distinct_and_die_with_their_process(tmp_path: Path) -> None:
    """Two processes claim one id each of two: different ids; a third, while both hold theirs,
    waits, and gets one as soon as a holder is killed (its lock dies with it)."""
    code = ("import sys, time; from ndmha import gpus; "
            "print(gpus.claim(1, sys.argv[1], ['0', '1'], poll=0.1)[0], flush=True); "
            "time.sleep(float(sys.argv[2]))")
    holders = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path), "60"],
                                stdout=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        ids = sorted(h.stdout.readline().strip() for h in holders)
        assert ids == ["0", "1"]
        third = subprocess.Popen([sys.executable, "-c", code, str(tmp_path), "0"],
                                 stdout=subprocess.PIPE, text=True)
        with pytest.raises(subprocess.TimeoutExpired):
            third.wait(3)  # both ids held: it waits
        holders[0].kill()
        holders[0].wait()
        out, _ = third.communicate(timeout=60)
        assert out.strip() in ids
    finally:
        for h in holders:
            h.kill()
            h.wait()


def test_a_job_outside_a_local_run_is_left_alone() -> None:
    environ = {"CUDA_VISIBLE_DEVICES": "3"}
    assert gpus.assign(1, environ) is None and environ == {"CUDA_VISIBLE_DEVICES": "3"}
    environ = {gpus.POOL_ENV: "/nonexistent", gpus.IDS_ENV: "0"}
    assert gpus.assign(0, environ) == "" and environ["CUDA_VISIBLE_DEVICES"] == ""


def trainings(tmp_path: Path, count: int, given: bool) -> tuple[list[str], list[str]]:
    """Two trainings (one network, two seeds) on ``count`` stand-in GPUs, 2 cores: the device id
    each run's log names, and Snakemake's own account of the train jobs in order ("start" when it
    starts one, "end" when one finishes). The count is ``given`` as ``--resources gpu=N``, or
    detected: a stand-in ``nvidia-smi`` lists that many."""
    config = _with(train={"device": "auto"}, models=["baseline"], seeds=[0, 1],
                   resources={"prepare": {"threads": 1}, "train": {"threads": 1},
                              "evaluate": {"threads": 1}})
    config["results_dir"] = "r"
    tmp_path.mkdir()
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    smi = tmp_path / "bin" / "nvidia-smi"
    smi.parent.mkdir()
    smi.write_text("#!/bin/sh\n" + "".join(f"echo 'GPU {i}: stand-in'\n" for i in range(count)))
    smi.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    env["PATH"] = f"{smi.parent}{os.pathsep}{env['PATH']}"
    runs = ("baseline.seed0", "baseline.seed1")
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", *(f"r/models/{run}/model.pt" for run in runs),
         "-s", str(ROOT / "Snakefile"), "--directory", str(tmp_path), "--configfile",
         str(tmp_path / "config.yaml"), "--cores", "2",
         *(["--resources", f"gpu={count}"] if given else [])],
        capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    devices = []
    for run in runs:
        text = (tmp_path / "r" / "logs" / f"train_{run}.log").read_text()
        # the scheduler started no more than there were GPUs: no job had to wait for a lock
        assert "waiting for" not in text
        devices.append(re.search(r"CUDA_VISIBLE_DEVICES=(\S*) ", text)[1])
    events = ["start" if m[1] else "end" for m in re.finditer(
        r"^(?:local)?rule (train):|^Finished jobid: \d+ \(Rule: train\)", result.stdout +
        result.stderr, flags=re.M)]
    return devices, events


@pytest.mark.long
def test_one_training_per_gpu_on_a_workstation(tmp_path: Path) -> None:
    """One GPU (counted from nvidia-smi): the two trainings run one after the other, both on id 0.
    Two GPUs (given as --resources gpu=2): side by side (Snakemake starts both before either
    ends), on ids 0 and 1."""
    devices, events = trainings(tmp_path / "one", 1, False)
    assert devices == ["0", "0"]
    assert events == ["start", "end", "start", "end"], "two trainings shared the one GPU"
    devices, events = trainings(tmp_path / "two", 2, True)
    assert sorted(devices) == ["0", "1"]
    assert events == ["start", "start", "end", "end"], "two GPUs, yet one training waited"
