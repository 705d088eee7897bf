"""Long training survives a cluster: a stop signal mid-epoch, a timed checkpoint before a kill
without warning, a truncated last checkpoint. Every resumed run is compared bit for bit (float64,
CPU, one thread) with an uninterrupted one."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from ndmha.model_files import load_torch
from ndmha.errors import DataError, TrainingInterrupted
from ndmha.train import TIMING_COLUMNS, Trainer, TrainSettings, train

pytestmark = pytest.mark.long

#: the discriminator, its optimizer and the edge term are part of what must resume exactly
LOSS = {"l1": 1.0, "adversarial": 0.01, "edge": 0.5}
EPOCHS = 2  # 8 training images at batch 2: 4 steps an epoch


class PowerCut(BaseException):
    """A process that dies at once: nothing of the loop's own runs after it."""


def _settings(**overrides: object) -> TrainSettings:
    fields = {"architecture": "ndmha", "epochs": EPOCHS, "batch_size": 2, "loss": LOSS,
              "seed": 0, "device": "cpu", "dtype": "float64", "log_every": 1, **overrides}
    return TrainSettings(**fields)


@pytest.fixture(autouse=True)
def one_thread():
    """float64 on one thread: the same sums in the same order in every run of this file."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _run(manifest: Path, out: Path, **overrides: object) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    return train(manifest, out / "model.pt", out / "log.csv", out / "ckpt.pt",
                 _settings(**overrides))


@pytest.fixture(scope="module")
def reference(manifest: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("uninterrupted")
    _run(manifest, out)
    torch.set_num_threads(before)
    return out


def _same_run(a: Path, b: Path) -> None:
    wa, wb = load_torch(a / "model.pt")["state_dict"], load_torch(b / "model.pt")["state_dict"]
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)  # bitwise
    ra, rb = load_torch(a / "ckpt.pt")["rng"], load_torch(b / "ckpt.pt")["rng"]
    assert torch.equal(ra["torch"], rb["torch"])  # the global RNG stream continued exactly
    oa, ob = load_torch(a / "ckpt.pt")["d_optimizer"], load_torch(b / "ckpt.pt")["d_optimizer"]
    # every parameter's state (step, both moments), not the first one's: a zip would stop at the
    # shorter side, so the keys are compared first
    assert oa["state"].keys() == ob["state"].keys() and len(oa["state"]) > 1
    for index, state in oa["state"].items():
        assert state.keys() == ob["state"][index].keys()
        assert all(torch.equal(state[k], ob["state"][index][k]) for k in state)
    assert oa["param_groups"] == ob["param_groups"]
    pd.testing.assert_frame_equal(pd.read_csv(a / "log.csv").drop(columns=TIMING_COLUMNS),
                                  pd.read_csv(b / "log.csv").drop(columns=TIMING_COLUMNS),
                                  check_exact=True)


def _stop_after(monkeypatch: pytest.MonkeyPatch, calls: int, action) -> None:
    """Run ``action`` after the ``calls``-th training step of this process."""
    real, done = Trainer.train_batch, []

    def counted(self, *args):
        result = real(self, *args)
        done.append(1)
        if len(done) == calls:
            action()
        return result

    monkeypatch.setattr(Trainer, "train_batch", counted)


def test_sigterm_mid_epoch_checkpoints_stops_and_resumes_bitwise(
        manifest: Path, reference: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A real SIGTERM during epoch 2's second step: that step finishes, the checkpoint holds
    the epoch's position, the run stops with TrainingInterrupted (no model written); run again,
    it continues with batch 3 of epoch 2 and ends where the uninterrupted run ends."""
    _stop_after(monkeypatch, 6, lambda: os.kill(os.getpid(), signal.SIGTERM))
    with pytest.raises(TrainingInterrupted, match="SIGTERM at step 6"):
        _run(manifest, tmp_path)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is put back
    saved = load_torch(tmp_path / "ckpt.pt")
    assert saved["epoch"] == 1 and saved["partial"]["batches"] == 2
    assert saved["partial"]["step"] == 6 and not (tmp_path / "model.pt").exists()
    monkeypatch.undo()
    with caplog.at_level(logging.INFO, logger="ndmha"):
        _run(manifest, tmp_path)
    assert "in epoch 2, after its batch 2 (6 steps)" in caplog.text
    _same_run(reference, tmp_path)


def test_sigusr1_between_epochs_stops_after_the_epoch(manifest: Path, reference: Path,
                                                      tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """SLURM's --signal=USR1 on the epoch's last step: the epoch's own checkpoint is the stop's."""
    _stop_after(monkeypatch, 4, lambda: os.kill(os.getpid(), signal.SIGUSR1))
    with pytest.raises(TrainingInterrupted, match="SIGUSR1"):
        _run(manifest, tmp_path)
    saved = load_torch(tmp_path / "ckpt.pt")
    assert saved["partial"]["batches"] == 4  # written at the step, before the epoch's end
    monkeypatch.undo()
    _run(manifest, tmp_path)
    _same_run(reference, tmp_path)


def test_timed_checkpoint_bounds_what_a_kill_without_warning_loses(
        manifest: Path, reference: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """checkpoint_minutes: a checkpoint at most that often; a process that dies without a
    signal after step 3 (no handler runs) resumes from step 3, not from the epoch's start."""

    def power_cut() -> None:
        raise PowerCut("the node went away")

    _stop_after(monkeypatch, 3, power_cut)
    with pytest.raises(PowerCut):
        _run(manifest, tmp_path, checkpoint_minutes=1e-9)  # due after every step
    assert load_torch(tmp_path / "ckpt.pt")["partial"]["step"] == 2  # step 3 was in flight
    monkeypatch.undo()
    _run(manifest, tmp_path, checkpoint_minutes=1e-9)
    _same_run(reference, tmp_path)


def test_a_truncated_last_checkpoint_falls_back_to_the_one_before(
        manifest: Path, reference: Path, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """The last checkpoint cut in half (a copy killed, a disk that lied): a warning names it,
    the one before it is used, and the run still ends where the uninterrupted one ends."""
    _run(manifest, tmp_path, epochs=1, checkpoint_minutes=1e-9)
    last = tmp_path / "ckpt.pt"
    assert (tmp_path / "ckpt.pt.prev").exists()
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    with caplog.at_level(logging.INFO, logger="ndmha"):
        _run(manifest, tmp_path)
    assert f"checkpoint {last} cannot be read" in caplog.text
    assert "resuming from the checkpoint before it" in caplog.text
    _same_run(reference, tmp_path)


def test_no_readable_checkpoint_stops_and_keeps_both(manifest: Path, tmp_path: Path) -> None:
    """Never a silent restart over them: both files unreadable is an error naming both, and
    both stay on disk."""
    (tmp_path / "ckpt.pt").write_bytes(b"PK\x03\x04 half a zip")
    (tmp_path / "ckpt.pt.prev").write_bytes(b"")
    with pytest.raises(DataError, match="ckpt.pt and .*ckpt.pt.prev"):
        _run(manifest, tmp_path)
    assert (tmp_path / "ckpt.pt").exists() and (tmp_path / "ckpt.pt.prev").exists()


def test_the_command_line_exits_75_on_sigterm_and_resumes(manifest: Path, reference: Path,
                                                          tmp_path: Path) -> None:
    """From outside, as scancel --signal=TERM or a preemption sends it: `ndmha train` finishes
    its step, writes the checkpoint and exits 75 (try again); run again, the same weights."""
    settings = json.dumps({"architecture": "ndmha", "epochs": EPOCHS, "batch_size": 2,
                           "loss": LOSS, "seed": 0, "device": "cpu", "dtype": "float64",
                           "log_every": 1, "checkpoint_minutes": 1e-9})
    script = ("import sys, torch; torch.set_num_threads(1); from ndmha.__main__ import main; "
              "sys.exit(main(sys.argv[1:]))")
    cmd = [sys.executable, "-c", script, "train", "--manifest", str(manifest), "--model-out",
           str(tmp_path / "model.pt"), "--log-csv", str(tmp_path / "log.csv"), "--checkpoint",
           str(tmp_path / "ckpt.pt"), "--settings", settings]
    with open(tmp_path / "output.txt", "w") as output:
        process = subprocess.Popen(cmd, stdout=output, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 600
    while not (tmp_path / "ckpt.pt").exists():  # a step is done: the timed checkpoint exists
        assert process.poll() is None, (tmp_path / "output.txt").read_text()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=600) == TrainingInterrupted.EXIT_STATUS, \
        (tmp_path / "output.txt").read_text()[-3000:]
    saved = load_torch(tmp_path / "ckpt.pt")
    assert saved["partial"] is not None and not (tmp_path / "model.pt").exists()
    assert "SIGTERM received" in (tmp_path / "output.txt").read_text()
    subprocess.run(cmd, check=True, capture_output=True)
    _same_run(reference, tmp_path)
