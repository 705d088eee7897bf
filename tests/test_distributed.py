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

from ndmha.train import load_torch

SETTINGS = {"model": "ndmha", "epochs": 2, "seed": 0, "device": "cpu", "deform_backend": "torch",
            "loss": {"l1": 1.0, "adversarial": 0.01, "perceptual": 0.1, "edge": 0.5},
            "perceptual": {"allow_random_perceptual": True}}
#: generator weights after 4 Adam steps: float sums in another order (gloo's all-reduce,
#: per-rank means) differ by ~1e-8 in the gradients
TOLERANCE = 1e-5
#: discriminator weights: many of its gradients are as small as that float noise, and Adam's first
#: steps move each weight by about lr * sign(gradient) whatever its size, so a flipped sign moves a
#: weight by up to 2 lr per step; its loss still agrees to 1e-4 (checked below)
D_TOLERANCE = 2 * 2e-4 * 4


def _train(manifest: Path, out: Path, batch_size: int, processes: int
           ) -> subprocess.CompletedProcess:
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone",
                 f"--nproc-per-node={processes}"] if processes > 1 else [sys.executable])
    cmd = [*launcher, "-m", "ndmha", "train", "--manifest", str(manifest), "--model-out",
           str(out / "model.pt"), "--log-csv", str(out / "log.csv"), "--checkpoint",
           str(out / "ckpt.pt"), "--settings", json.dumps({**SETTINGS, "batch_size": batch_size})]
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


def test_two_processes_of_batch_b_equal_one_process_of_batch_2b(runs: dict[str, Path]) -> None:
    one = load_torch(runs["one"] / "model.pt")["state_dict"]
    two = load_torch(runs["two"] / "model.pt")["state_dict"]
    assert one.keys() == two.keys()
    worst = max((one[k].double() - two[k].double()).abs().max().item() for k in one
                if one[k].is_floating_point())
    assert worst < TOLERANCE
    changed = max((one[k].double() - load_torch(runs["one"] / "ckpt.pt")["model"][k].double())
                  .abs().max().item() for k in one if one[k].is_floating_point())
    assert changed == 0.0  # the model file is the last checkpoint's weights
    # the discriminator, trained through DDP as well, agrees within Adam's sign noise
    d_one = load_torch(runs["one"] / "ckpt.pt")["discriminator"]
    d_two = load_torch(runs["two"] / "ckpt.pt")["discriminator"]
    weights = [k for k in d_one if k.endswith(("original", "bias"))]  # not the power-iteration
    assert len(weights) == 10                                          # vectors derived from them
    assert max((d_one[k] - d_two[k]).abs().max().item() for k in weights) < D_TOLERANCE


def test_rank_0_alone_writes_and_logs_cover_all_ranks(runs: dict[str, Path]) -> None:
    one = pd.read_csv(runs["one"] / "log.csv")
    two = pd.read_csv(runs["two"] / "log.csv")
    assert list(two["epoch"]) == [1, 2]
    # training metrics are summed over both ranks' shards: the same images as one process
    for column in ("train_loss_l1", "train_psnr", "val_psnr"):
        assert two[column].to_numpy() == pytest.approx(one[column].to_numpy(), rel=1e-5)
    # the discriminator's loss agrees as closely as its weights (see D_TOLERANCE)
    assert two["train_d_loss"].to_numpy() == pytest.approx(one["train_d_loss"].to_numpy(),
                                                           rel=1e-4)
    assert sorted(p.name for p in runs["two"].iterdir()) == ["ckpt.pt", "log.csv", "model.pt"]


def test_launch_training_starts_torchrun_for_several_gpus(monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:
    from ndmha import distributed

    calls = []
    monkeypatch.setattr(distributed.subprocess, "run", lambda cmd, **kw: calls.append(cmd))
    distributed.launch_training("m.csv", "model.pt", "log.csv", "c.pt", {"model": "ndmha"},
                                gpus=4)
    (cmd,) = calls
    assert cmd[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=4"]
    assert cmd[5:8] == ["-m", "ndmha", "train"] and json.loads(cmd[-1]) == {"model": "ndmha"}
