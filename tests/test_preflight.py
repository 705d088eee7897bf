"""Preflight on a look-alike of the real data (CelebA-HQ's 1024 px PNGs, QD-IMD's 512 px masks):
the table with its projection, exit 0 when nothing blocks, and each blocker flipping the verdict
(a missing weight, inverted masks, too few images, too little disk)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from ndmha import preflight
from ndmha.data.demo import draw_face, draw_mask
from ndmha.io import write_image
from ndmha.preflight import BLOCK, OK, run_preflight
from ndmha.study import load

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "configs" / "paper_celebahq.yaml"
N = 12


@pytest.fixture(scope="module")
def lookalike(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 faces as 1024 px PNGs named as CelebA-HQ's, 12 stroke masks at 512 px (white holes)."""
    root = tmp_path_factory.mktemp("lookalike")
    for i in range(N):
        face = cv2.resize(draw_face(128, 5, i), (1024, 1024), interpolation=cv2.INTER_CUBIC)
        write_image(root / "CelebA-HQ" / f"{i:05d}.png", face)
        write_image(root / "QD-IMD" / "train" / f"{i:05d}.png", draw_mask(512, 5, i))
    return root


def overrides(root: Path, **extra: str) -> list[str]:
    """The paper's config at the look-alike's scale: the U-Net and Telea, 32 px, batch 2."""
    return [f"results_dir={root / 'results'}",
            f"data={{images_dir: {root / 'CelebA-HQ'}, masks_dir: {root / 'QD-IMD' / 'train'}, "
            f"n_images: {extra.get('n', N)}, image_size: 32, "
            f"mask_hole: {extra.get('hole', 'white')}}}",
            "split={test: 4}", "models=[baseline, telea]",
            "train={batch_size: 2, epochs: 2, num_workers: 0, device: cpu}",
            f"evaluation={{lpips: {{net: alex, weights: {extra.get('lpips', 'off')}}}, "
            "fid: {inception_weights: off}}",
            "resources={prepare: {threads: 1}, train: {runtime: 60}}"]


def folders(root: Path) -> str:
    """The paper config's data folders, empty: enough for a config to resolve."""
    return f"data={{images_dir: {root}, masks_dir: {root}}}"


def verdicts(report: preflight.Report) -> dict[str, str]:
    return {c.area: c.verdict for c in report.checks}


def test_the_paper_config_on_a_lookalike(lookalike: Path, tmp_path: Path) -> None:
    """The command end to end: exit 0, the table with a projection row per experiment and the
    whole run, the same text in results_dir/preflight.md and nothing else there, nothing in the
    folder it runs in."""
    out = lookalike / "results" / "preflight.md"
    result = subprocess.run(
        [sys.executable, "-m", "ndmha", "preflight", "--configfile", str(PAPER), "--config",
         *overrides(lookalike), "--steps", "2"],
        capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    table = out.read_text()
    assert table.strip() in result.stdout and "nothing blocks" in table
    for row in ("| data: counts | ok | 12 images and masks planned",
                "| data: images | ok | 12 readable: 12 at 1024x1024",
                "| data: masks | ok | 12 readable: 12 at 512x512",
                "| dev run: baseline | ok | 2 training steps at batch 2",
                "| dev run: telea | ok |",
                "| baseline | 1 | 8 |",  # (12 - 4 test) / batch 2 = 4 steps an epoch, 2 epochs
                "| **the whole run** | 2 |"):
        assert row in table
    assert list((lookalike / "results").iterdir()) == [out] and list(tmp_path.iterdir()) == []
    assert f"the preflight's table is written to {out}" in result.stderr


def test_a_blocker_exits_1_with_its_line(lookalike: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ndmha", "preflight", "--configfile", str(PAPER), "--config",
         *overrides(lookalike, lpips="alexnet-owt-7be5be79.pth"), "--no-dev-run",
         "--out", str(tmp_path / "p.md")], capture_output=True, text=True, cwd=tmp_path,
        timeout=300)
    assert result.returncode == 1
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("preflight blocker:")]
    assert len(lines) == 1 and "evaluation.lpips.weights (alexnet-owt-7be5be79.pth not found)" \
        in lines[0] and "fetch-weights" in lines[0]


@pytest.mark.parametrize("blocker, area", [
    ("weights", "weights"), ("inverted", "data: mask polarity"), ("few", "data: counts"),
    ("disk", "disk")])
def test_each_blocker_flips_the_verdict(blocker: str, area: str, lookalike: Path,
                                        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        trust, alexnet_weights: Path) -> None:
    """The same config passes, then blocks on exactly the one check the change concerns."""
    alexnet = Path(shutil.copy(alexnet_weights, tmp_path / "alexnet.pth"))
    trust("alexnet", alexnet)
    dev = blocker == "disk"  # the disk needs the projection, hence the dev run

    def run(**extra: str) -> dict[str, str]:
        study = load([PAPER], overrides(lookalike, lpips=str(alexnet), **extra))
        return verdicts(run_preflight(study, tmp_path / "scratch" / str(len(extra)), steps=1,
                                      test_images=2, dev=dev))

    before = run()
    assert BLOCK not in before.values() and before[area] == OK
    if blocker == "weights":
        alexnet.unlink()
        after = run()
    elif blocker == "inverted":
        after = run(hole="black")
    elif blocker == "few":
        after = run(n=str(N + 1))
    else:
        monkeypatch.setattr(preflight, "free_space", lambda folder: 10**6)  # 1 MB free
        after = run()
    assert [a for a, v in after.items() if v == BLOCK] == [area]
    # run_preflight writes nothing under results_dir (the command's table alone may be there)
    results = lookalike / "results"
    assert sorted(p.name for p in results.rglob("*")) in ([], ["preflight.md"])


@pytest.mark.parametrize("device, verdict", [("cuda", BLOCK), ("cpu", preflight.WARN)])
def test_the_submissions_a_training_needs_at_its_runtime(device: str, verdict: str,
                                                          tmp_path: Path) -> None:
    """The paper's config as shipped: 27,000 training images, 200 epochs at batch 1, 3,000 test
    images. A measured 0.016 s a step and no prediction time make 5.4 M steps, 86,400 s = 1,440
    min of training; at resources.train.runtime 500 min less the 10 min warning, 490 usable: 3
    submissions (1,440 / 490 = 2.94), one more than the 2 allowed. On a GPU that blocks; measured
    on a CPU it is a warning."""
    import dataclasses

    import torch

    study = load([PAPER], ["models=[baseline]", "resources={train: {runtime: 500}}",
                           "cluster={partition: gpu, train_submissions: 2}", folders(tmp_path)])
    measured = {"baseline": {"step_seconds": 86_400 / 5_400_000, "predict_seconds": 0.0,
                             "model_bytes": 0, "checkpoint_bytes": 0, "prediction_bytes": 0}}
    data = {"prepare_seconds": 0.0, "images": 0, "masks": 0, "corrupted": 0}
    report = preflight.Report()
    preflight.project(study, measured, data, report, torch.device(device),
                      [f"{i:05d}" for i in range(30_000)])
    row = next(r for r in report.projection if r["experiment"] == "baseline")
    assert (row["steps a run"], row["wall time"], row["submissions"]) == ("5,400,000", "24.0 h",
                                                                          "3 of 2")
    assert verdicts(report) == {"cluster: baseline": verdict}
    # one submission more allowed: nothing to say
    study = dataclasses.replace(study, cluster=dataclasses.replace(study.cluster,
                                                                   train_submissions=3))
    report = preflight.Report()
    preflight.project(study, measured, data, report, torch.device(device),
                      [f"{i:05d}" for i in range(30_000)])
    assert report.checks == []


def test_the_24_hour_recipe_carries_three_days_of_training(tmp_path: Path) -> None:
    """configs/cluster_24h.yaml, laid under a user's overlay: 72 hours of training measured on a
    GPU take 4 of its 6 submissions (1,430 usable minutes each) and nothing blocks."""
    import torch

    study = load([ROOT / "configs" / "cluster_24h.yaml"],
                 ["models=[ndmha]", "cluster={partition: gpu}", folders(tmp_path)])
    measured = {"ndmha": {"step_seconds": 72 * 3600 / 5_400_000, "predict_seconds": 0.0,
                          "model_bytes": 0, "checkpoint_bytes": 0, "prediction_bytes": 0}}
    data = {"prepare_seconds": 0.0, "images": 0, "masks": 0, "corrupted": 0}
    report = preflight.Report()
    preflight.project(study, measured, data, report, torch.device("cuda"),
                      [f"{i:05d}" for i in range(30_000)])
    row = next(r for r in report.projection if r["experiment"] == "ndmha")
    assert (row["wall time"], row["submissions"]) == ("72.0 h", "4 of 6")
    assert report.checks == [] and study.train["checkpoint_minutes"] == 30
