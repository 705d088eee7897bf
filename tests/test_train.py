"""The training loop: learning, logging, checkpoints and resume."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import pandas as pd
import pytest
import torch

from ndmha.losses import Objective
from ndmha.errors import ConfigError
from ndmha.models import build_model
from ndmha.model_files import load_model, load_torch
from ndmha.train import TIMING_COLUMNS, TrainSettings, train


def test_training_steps_lower_the_loss_on_a_tiny_batch() -> None:
    torch.manual_seed(0)
    model = build_model("baseline")
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-4, betas=(0.5, 0.99))
    criterion = Objective({"l1": 1.0})
    target = torch.rand(2, 3, 32, 32)
    mask = (torch.rand(2, 1, 32, 32) > 0.7).float()
    image = target * (1 - mask)
    losses = []
    for _ in range(25):
        loss, parts = criterion(model(image, mask), target, mask, image)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert set(parts) == {"l1"}
    # 25 Adam steps on the one batch it trains on: a working step memorises it; a step that
    # updates nothing (no gradient, a wrong sign) leaves the loss where it was or raises it, so a
    # 20 % drop separates the two with room for the batch's own noise
    assert losses[-1] < 0.8 * losses[0]


def test_unknown_loss_term_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"loss.baseline: unknown loss term\(s\) \['l2'\]"):
        Objective({"l2": 1.0}, key="loss.baseline")


def _settings(epochs: int, **kw) -> TrainSettings:
    return TrainSettings(architecture="baseline", epochs=epochs, batch_size=4, seed=0, device="cpu", **kw)


def _run(manifest: Path, out: Path, epochs: int, ckpt: Path | None = None, **kw) -> list[dict]:
    return train(manifest, out / "model.pt", out / "log.csv", ckpt or out / "ckpt" / "last.pt",
                 _settings(epochs, **kw))


def test_train_writes_model_and_epoch_log(manifest: Path, tmp_path: Path) -> None:
    history = _run(manifest, tmp_path, epochs=2)
    with open(tmp_path / "log.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for prefix in ("train", "val"):
        for metric in ("loss", "l1", "psnr", "ssim"):
            assert all(float(r[f"{prefix}_{metric}"]) == float(r[f"{prefix}_{metric}"])
                       for r in rows)  # present and not NaN
    assert rows[0]["val_split"] == "test"  # the paper split has no validation images
    assert history[1]["train_loss"] < history[0]["train_loss"]
    meta, model = load_model(tmp_path / "model.pt")
    assert meta["architecture"] == meta["experiment"] == "baseline" and meta["epochs"] == 2 and not model.training
    state = load_torch(tmp_path / "ckpt" / "last.pt")
    assert state["epoch"] == 2 and len(state["history"]) == 2


def test_resume_continues_and_matches_an_uninterrupted_run(manifest: Path, tmp_path: Path,
                                                           caplog: pytest.LogCaptureFixture
                                                           ) -> None:
    full = _run(manifest, tmp_path / "full", epochs=2)
    ckpt = tmp_path / "split" / "ckpt.pt"
    _run(manifest, tmp_path / "split", epochs=1, ckpt=ckpt)
    with caplog.at_level(logging.INFO, logger="ndmha"):
        resumed = _run(manifest, tmp_path / "split", epochs=2, ckpt=ckpt)
    assert "resuming baseline" in caplog.text and "after epoch 1" in caplog.text
    drop = lambda rows: [{k: v for k, v in r.items() if k not in TIMING_COLUMNS}  # noqa: E731
                         for r in rows]
    assert drop(resumed) == drop(full)
    a = load_torch(tmp_path / "full" / "model.pt")["state_dict"]
    b = load_torch(tmp_path / "split" / "model.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # bitwise on the CPU


def test_checkpoint_from_other_settings_is_not_resumed(manifest: Path, tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    ckpt = tmp_path / "ckpt.pt"
    _run(manifest, tmp_path / "a", epochs=1, ckpt=ckpt)
    with caplog.at_level(logging.INFO, logger="ndmha"):
        history = _run(manifest, tmp_path / "b", epochs=1, ckpt=ckpt, lr=1e-3)
    assert "starting afresh" in caplog.text
    assert len(history) == 1


def test_lr_scaling_rules() -> None:
    base = dict(architecture="baseline", epochs=1, lr=2e-4, lr_reference_batch=1)
    assert TrainSettings(**base, batch_size=16).effective_lr() == 2e-4
    assert TrainSettings(**base, batch_size=16, lr_scaling="linear").effective_lr() == 3.2e-3
    assert TrainSettings(**base, batch_size=16, lr_scaling="sqrt").effective_lr() == 8e-4


def test_lr_schedule_warms_up_then_falls_on_a_cosine() -> None:
    base = dict(architecture="baseline", epochs=1)
    assert [TrainSettings(**base).lr_factor(k) for k in (0, 99)] == [1.0, 1.0]
    warm = TrainSettings(**base, warmup_steps=4)
    assert [warm.lr_factor(k) for k in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    cos = TrainSettings(**base, lr_decay="cosine", lr_decay_steps=100, lr_final=0.1)
    assert cos.lr_factor(0) == 1.0
    assert cos.lr_factor(50) == pytest.approx(0.55)  # half way: the mean of 1 and lr_final
    assert cos.lr_factor(100) == cos.lr_factor(1000) == pytest.approx(0.1)
    assert all(cos.lr_factor(k) > cos.lr_factor(k + 1) for k in range(100))
    with pytest.raises(ConfigError, match="train.lr_decay_steps"):
        TrainSettings(**base, lr_decay="cosine")


def test_fingerprint_hashes_the_starting_weights_by_content(manifest: Path,
                                                            tmp_path: Path) -> None:
    """Fine-tuning: the run is tied to the bytes of its init_from file, not to its path."""
    start = tmp_path / "start.pt"
    start.write_bytes(b"one")
    s = _settings(1, init_from=str(start))
    first = s.fingerprint(manifest)
    assert first != _settings(1).fingerprint(manifest)
    start.write_bytes(b"two")
    assert s.fingerprint(manifest) != first
    moved = tmp_path / "moved.pt"
    moved.write_bytes(b"two")
    assert _settings(1, init_from=str(moved)).fingerprint(manifest) == s.fingerprint(manifest)


def test_channels_last_training_matches_contiguous(manifest: Path, tmp_path: Path) -> None:
    """A fast path that leaves results unchanged: NHWC memory gives the same training."""
    runs = {}
    for fmt in ("off", "on"):  # float64: the two memory layouts differ only in summation order
        runs[fmt] = _run(manifest, tmp_path / fmt, epochs=1, channels_last=fmt,
                         dtype="float64")[0]
    # 2 Adam steps: weights within 2 * (lr / eps) * 1e-12 (see test_distributed.TOLERANCE) =
    # 4e-8, so the losses (float64) within rel 1e-6; the metrics are float32 (one rounding step,
    # 6e-8). Measured: equal to 1e-15. A real layout bug (a transposed map) changes them by > 1e-2.
    for key in ("train_loss", "val_loss", "val_psnr", "val_ssim"):
        assert runs["on"][key] == pytest.approx(runs["off"][key], rel=1e-6)


def test_evaluation_leaves_the_discriminator_as_it_was(manifest: Path) -> None:
    """Validation runs the objective, discriminator included, in eval mode: its spectral norm's
    power-iteration vectors are not updated (they were, once, so that validation changed what
    trained and one process and two of half the batch trained different discriminators)."""
    from torch.utils.data import DataLoader

    from ndmha.data.dataset import InpaintingDataset
    from ndmha.train import evaluate

    torch.manual_seed(0)
    objective = Objective({"l1": 1.0, "adversarial": 0.01}).train()
    before = {k: v.clone() for k, v in objective.discriminator.state_dict().items()}
    loader = DataLoader(InpaintingDataset(manifest, "test"), batch_size=2)
    evaluate(build_model("baseline"), loader, objective, torch.device("cpu"), "val")
    after = objective.discriminator.state_dict()
    assert any(k.endswith("_u") for k in after)
    assert all(torch.equal(before[k], after[k]) for k in before)


def _events(folder: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return events


def test_tensorboard_curves_and_grids_and_a_resumed_run_repeats_no_step(manifest: Path,
                                                                         tmp_path: Path) -> None:
    """Every step's loss terms and lr (log_every 1), every epoch's metrics and prediction grid;
    after a kill that lost an epoch's checkpoint but not its events, the resumed run's events
    replace the lost epoch's instead of repeating its steps."""
    board, ckpt = tmp_path / "tb", tmp_path / "ckpt.pt"

    def run(epochs: int) -> None:  # 8 train images, batch 4: 2 steps per epoch
        train(manifest, tmp_path / "model.pt", tmp_path / "log.csv", ckpt,
              _settings(epochs, log_every=1, board_images=3), tensorboard_dir=board)

    run(1)
    after_epoch_1 = ckpt.read_bytes()
    run(2)  # steps 3 and 4 logged, then the epoch-2 checkpoint is "lost" to a kill:
    ckpt.write_bytes(after_epoch_1)
    run(2)  # resumes after step 2 and logs steps 3 and 4 again

    events = _events(board)
    for tag in ("train/loss", "train/loss_l1", "train/lr", "train/skipped_steps"):
        assert [e.step for e in events.Scalars(tag)] == [1, 2, 3, 4], tag
    assert [e.step for e in events.Scalars("epoch/val_psnr")] == [2, 4]
    assert [e.step for e in events.Scalars("epoch/train_ssim")] == [2, 4]
    final = pd.read_csv(tmp_path / "log.csv")
    assert [e.value for e in events.Scalars("epoch/val_psnr")] == \
        pytest.approx(list(final["val_psnr"]), rel=1e-6)  # float32 in the event file
    grids = events.Images("predictions")
    assert [g.step for g in grids] == [2, 4]
    assert (grids[0].width, grids[0].height) == (3 * 32 + 4, 3 * 32 + 4)  # 3 x 3, padding 1


def test_tensorboard_off(manifest: Path, tmp_path: Path) -> None:
    train(manifest, tmp_path / "model.pt", tmp_path / "log.csv", tmp_path / "c.pt",
          _settings(1, tensorboard=False), tensorboard_dir=tmp_path / "tb")
    assert not (tmp_path / "tb").exists()


def test_fingerprint_hashes_the_resolved_precision(manifest: Path) -> None:
    """amp: auto is bf16 on a GPU and off on a CPU: a CPU checkpoint's fingerprint differs from
    the same settings' on a GPU (no silent resume under bf16); explicit settings agree."""
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)  # only the device's type is read
    auto = TrainSettings(architecture="baseline", epochs=1, amp="auto")
    assert (auto.precision(cpu), auto.precision(gpu)) == ("off", "bf16")
    assert auto.fingerprint(manifest, cpu) != auto.fingerprint(manifest, gpu)
    assert auto.fingerprint(manifest, cpu) == \
        TrainSettings(architecture="baseline", epochs=1, amp="off").fingerprint(manifest, cpu)
    bf16 = TrainSettings(architecture="baseline", epochs=1, amp="bf16")
    assert bf16.fingerprint(manifest, cpu) == bf16.fingerprint(manifest, gpu)
    wide = TrainSettings(architecture="baseline", epochs=1, amp="auto", dtype="float64")
    assert wide.precision(gpu) == "off"  # float64 runs never autocast


def test_a_checkpoint_of_another_precision_says_so(manifest: Path, tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    ckpt = tmp_path / "ckpt.pt"
    _run(manifest, tmp_path / "a", epochs=1, ckpt=ckpt)
    assert load_torch(ckpt)["precision"] == "off"
    with caplog.at_level(logging.INFO, logger="ndmha"):
        _run(manifest, tmp_path / "b", epochs=1, ckpt=ckpt, amp="bf16")
    assert "its precision: off, this run's: bf16 on cpu); starting afresh" in caplog.text


def test_rng_state_holds_this_device_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a GPU the checkpoint keeps the CUDA generator of this process's device, not every
    visible GPU's, and restores it onto whatever device the resumed rank has."""
    import ndmha.train.reproducibility as train_module

    calls = []
    monkeypatch.setattr(torch.cuda, "get_rng_state",
                        lambda device: calls.append(("get", device)) or torch.tensor([7]))
    monkeypatch.setattr(torch.cuda, "get_rng_state_all",
                        lambda: pytest.fail("every visible GPU's state saved"))
    monkeypatch.setattr(torch.cuda, "set_rng_state",
                        lambda state, device: calls.append(("set", device, int(state[0]))))
    saved = train_module.rng_state(torch.device("cuda", 3))
    assert saved["cuda"].tolist() == [7] and calls == [("get", torch.device("cuda", 3))]
    train_module.set_rng_state(saved, torch.device("cuda", 0))  # resumed with fewer GPUs
    assert calls[-1] == ("set", torch.device("cuda", 0), 7)
    assert "cuda" not in train_module.rng_state(torch.device("cpu"))


def test_logged_metrics_use_clamped_predictions() -> None:
    """The per-epoch metrics score the composite of the clamped prediction, as the test metrics
    score its 8-bit image: a prediction beyond [0, 1] counts as its clamp."""
    from ndmha.train.running import RunningMeans

    target = torch.full((1, 3, 16, 16), 0.9)
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 4:12, 4:12] = 1
    image = target * (1 - mask)
    wild, clamped = RunningMeans(), RunningMeans()
    wild.add(1, {}, torch.full_like(target, 1.7), image, mask, target)
    clamped.add(1, {}, torch.ones_like(target), image, mask, target)
    assert wild.result("val") == clamped.result("val")


def test_set_device_comes_before_the_process_group(monkeypatch: pytest.MonkeyPatch) -> None:
    import ndmha.distributed as distributed

    calls = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: calls.append(("set_device", index)))
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.dist, "init_process_group",
                        lambda backend: calls.append(("init", backend)))
    ranks, device = distributed.init("auto")
    assert calls == [("set_device", 1), ("init", "nccl")]
    assert device == torch.device("cuda", 1) and ranks.rank == 1


def test_running_means_skip_a_marked_step_and_weigh_by_images() -> None:
    """A step the guard marks as skipped adds nothing, even NaN; the means weigh by images."""
    from ndmha.train.running import RunningMeans

    target = torch.full((2, 3, 16, 16), 0.5)
    mask = torch.ones(2, 1, 16, 16)
    means = RunningMeans()
    means.add(2, {"loss": torch.tensor(1.0)}, target, target, mask, target)
    means.add(1, {"loss": torch.tensor(4.0)}, target[:1], target[:1], mask[:1], target[:1])
    means.add(2, {"loss": torch.tensor(float("nan"))}, target, target, mask, target,
              ok=torch.tensor(False))
    assert means.result("train")["train_loss"] == pytest.approx((2 * 1.0 + 4.0) / 3, rel=1e-12)


def test_meanmetric_disable_ignores_weight() -> None:
    """Why ``RunningMeans`` is not torchmetrics' MeanMetric (its docstring): with
    ``nan_strategy="disable"`` (the one strategy that does not sync) the weight is discarded, so
    a skipped step cannot weigh 0. When this fails, torchmetrics has changed: revisit
    RunningMeans."""
    from torchmetrics.aggregation import MeanMetric

    metric = MeanMetric(nan_strategy="disable")
    metric.update(torch.tensor([1.0]), torch.tensor([2.0]))
    metric.update(torch.tensor([4.0]), torch.tensor([0.0]))
    assert float(metric.compute()) == pytest.approx(2.5)  # unweighted; weighted would be 1.0


def test_a_trainer_times_its_steady_step_on_a_real_batch(manifest: Path, tmp_path: Path) -> None:
    """The preflight's projection multiplies this: one timed second count per step asked for,
    after a warm-up; each is a real update (the weights move at every one of them)."""
    from ndmha.train import Trainer

    trainer = Trainer(_settings(1), manifest, tmp_path / "timing.pt")
    before = [p.detach().clone() for p in trainer.model.parameters()]
    times = trainer.time_steps(manifest, 3, warmup=1)
    assert len(times) == 3 and all(t > 0 for t in times)
    moved = sum(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))
    assert moved > 0
    assert trainer.optimizer.state[next(trainer.model.parameters())]["step"] == 4  # 1 + 3
