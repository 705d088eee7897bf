"""Multi-process training with torchrun + DistributedDataParallel (gloo on the CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from ndmha.model_files import load_torch

SETTINGS = {"architecture": "ndmha", "epochs": 2, "seed": 0, "device": "cpu",
            "loss": {"l1": 1.0, "adversarial": 0.01, "perceptual": 0.1, "edge": 0.5},
            "perceptual": {"allow_random_perceptual": True}, "dtype": "float64", "amp": "off"}
#: Both runs train in float64, so that the only difference between them is the order of the
#: float sums (gloo's all-reduce and the per-rank means against one batch mean): a relative error
#: of k * 2^-53 for a sum of k terms, under 1e-12 of a gradient entry here (|g| <= 1 after
#: clipping to norm 1). Adam's update lr * g / (|g| + eps) changes by at most lr / eps = 2e4 times
#: a change of g (the worst case, |g| near 0), so after the 4 steps of these runs no weight may
#: differ by more than 4 * 2e4 * 1e-12 = 8e-8. Measured on AMD EPYC: 4.4e-16 (generator), 2.4e-13
#: (discriminator). Broken equivalence moves weights by about lr = 2e-4 per step: measured once,
#: a dropped DistributedSampler gave 2.7e-3 and DDP without its gradient all-reduce 1.7e-3.
#: In float32 the sums differ by ~1e-7 and Adam turns a flipped sign of a near-zero gradient into
#: a 2 lr jump, which is why the equivalence is checked in float64.
TOLERANCE = 1e-7


def _train(manifest: Path, out: Path, batch_size: int, processes: int
           ) -> subprocess.CompletedProcess:
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone",
                 f"--nproc-per-node={processes}"] if processes > 1 else [sys.executable])
    cmd = [*launcher, "-m", "ndmha", "train", "--manifest", str(manifest), "--model-out",
           str(out / "model.pt"), "--log-csv", str(out / "log.csv"), "--checkpoint",
           str(out / "ckpt.pt"), "--settings", json.dumps({**SETTINGS, "batch_size": batch_size}),
           "--deform-backend", "torch"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture(scope="module")
def runs(manifest: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ddp")
    out = {"one": root / "one", "two": root / "two"}
    single = _train(manifest, out["one"], batch_size=4, processes=1)
    assert single.returncode == 0, single.stderr[-3000:]
    double = _train(manifest, out["two"], batch_size=2, processes=2)
    assert double.returncode == 0, double.stderr[-3000:]
    return out


def _worst(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], keys) -> float:
    return max((a[k] - b[k]).abs().max().item() for k in keys)


def test_two_processes_of_batch_b_equal_one_process_of_batch_2b(runs: dict[str, Path]) -> None:
    one = load_torch(runs["one"] / "model.pt")["state_dict"]
    two = load_torch(runs["two"] / "model.pt")["state_dict"]
    assert one.keys() == two.keys()
    floating = [k for k in one if one[k].is_floating_point()]
    assert all(one[k].dtype == torch.float64 for k in floating)  # the run really was float64
    assert _worst(one, two, floating) < TOLERANCE
    start = load_torch(runs["one"] / "ckpt.pt")
    assert _worst(one, start["model"], floating) == 0.0  # the model file is the last checkpoint
    # the discriminator, trained through DDP as well, agrees to the same bound
    d_one = start["discriminator"]
    d_two = load_torch(runs["two"] / "ckpt.pt")["discriminator"]
    weights = [k for k in d_one if k.endswith(("original", "bias"))]  # not the power-iteration
    assert len(weights) == 10                                          # vectors derived from them
    assert _worst(d_one, d_two, weights) < TOLERANCE


def test_rank_0_alone_writes_and_logs_cover_all_ranks(runs: dict[str, Path]) -> None:
    one = pd.read_csv(runs["one"] / "log.csv")
    two = pd.read_csv(runs["two"] / "log.csv")
    assert list(two["epoch"]) == [1, 2]
    # training metrics are summed over both ranks' shards: the same images as one process. Losses
    # are float64; PSNR / SSIM / L1 are computed in float32 (ndmha.metrics) from predictions equal
    # to ~1e-15, which may straddle one float32 rounding step (6e-8 relative): rel 1e-6 allows
    # that with a margin. Measured: at most 1.1e-12 (the adversarial term). Broken: ~1e-3.
    for column in ("train_loss", "train_loss_adversarial", "train_d_loss", "train_psnr",
                   "train_ssim", "val_loss", "val_psnr", "val_ssim"):
        assert two[column].to_numpy() == pytest.approx(one[column].to_numpy(), rel=1e-6)
    assert sorted(p.name for p in runs["two"].iterdir()) == ["ckpt.pt", "ckpt.pt.prev", "log.csv",
                                                             "model.pt"]


def test_launch_training_starts_torchrun_for_several_gpus(monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:
    from ndmha import launch

    from ndmha.models.layers import BACKEND_ENV, set_backend

    calls = []
    monkeypatch.setattr(launch.subprocess, "run", lambda cmd, **kw: calls.append((cmd, kw)))
    set_backend("torch")  # the job's, from the config: the ranks inherit it
    launch.launch_training("m.csv", "model.pt", "log.csv", "c.pt", {"architecture": "ndmha"},
                           gpus=4, tensorboard_dir="tb")
    ((cmd, kw),) = calls
    assert cmd[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=4"]
    assert cmd[5:8] == ["-m", "ndmha", "train"] and cmd[-2:] == ["--tensorboard-dir", "tb"]
    assert json.loads(cmd[cmd.index("--settings") + 1]) == {"architecture": "ndmha"}
    assert kw["env"][BACKEND_ENV] == "torch" and "--deform-backend" not in cmd


#: a short run whose ranks decide every step (log_every 1): 8 images, 2 ranks of batch 2, 2 steps
#: an epoch; no perceptual term, so that the run is quick
STOPPABLE = {"architecture": "ndmha", "epochs": 4, "seed": 0, "device": "cpu", "batch_size": 2,
             "loss": {"l1": 1.0, "adversarial": 0.01, "edge": 0.5}, "dtype": "float64",
             "amp": "off", "log_every": 1}


@pytest.mark.long
def test_a_signal_on_one_rank_stops_both_at_one_step_and_resumes(manifest: Path,
                                                                 tmp_path: Path) -> None:
    """SIGTERM to rank 1 alone: both ranks stop at the same step, rank 0 writes one checkpoint;
    the resumed two-process run ends bitwise where an uninterrupted one ends."""
    import signal
    import time

    import psutil

    def cmd(out: Path, **extra: object) -> list[str]:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc-per-node=2", "-m", "ndmha", "train", "--manifest", str(manifest),
                "--model-out", str(out / "model.pt"), "--log-csv", str(out / "log.csv"),
                "--checkpoint", str(out / "ckpt.pt"),
                "--settings", json.dumps({**STOPPABLE, **extra})]

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ref, cut = tmp_path / "reference", tmp_path / "stopped"
    done = subprocess.run(cmd(ref), capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    with open(tmp_path / "output.txt", "w") as output:
        launcher = subprocess.Popen(cmd(cut, checkpoint_minutes=1e-9), stdout=output,
                                    stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 600
    while not (cut / "ckpt.pt").exists():  # a step is done
        assert launcher.poll() is None, (tmp_path / "output.txt").read_text()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.01)
    ranks = {int(p.environ().get("RANK", -1)): p
             for p in psutil.Process(launcher.pid).children(recursive=True)
             if "ndmha" in " ".join(p.cmdline())}
    ranks[1].send_signal(signal.SIGTERM)
    launcher.wait(timeout=600)
    text = (tmp_path / "output.txt").read_text()
    assert launcher.returncode != 0 and text.count("TrainingInterrupted") + text.count(
        "stopped by SIGTERM") >= 1, text[-3000:]
    saved = load_torch(cut / "ckpt.pt")
    assert saved["partial"] is not None and not (cut / "model.pt").exists(), text[-3000:]
    again = subprocess.run(cmd(cut), capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    a = load_torch(ref / "model.pt")["state_dict"]
    b = load_torch(cut / "model.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # same processes, same sums: bitwise
