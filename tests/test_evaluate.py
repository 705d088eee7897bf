"""Test inference, per-image and per-bucket metrics, the tables, the figures, ndmha inpaint."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from ndmha.data.split import read_manifest
from ndmha.evaluate import bucket_label, predict, score
from ndmha.figures import comparison_figures, data_samples, model_figures
from ndmha.io import read_image, write_image
from ndmha.table import write_tables
from ndmha.train import TrainSettings, train

ROOT = Path(__file__).resolve().parents[1]
RESOURCES = ROOT / "workflow" / "resources"


@pytest.fixture(scope="module")
def evaluated(manifest: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A baseline trained 1 epoch, its test predictions, scored without pretrained weights."""
    out = tmp_path_factory.mktemp("eval")
    train(manifest, out / "model.pt", out / "log.csv", out / "ckpt.pt",
          TrainSettings(architecture="baseline", epochs=1, batch_size=4, device="cpu"))
    predict(manifest, out / "model.pt", out / "pred", device="cpu")
    score(manifest, out / "pred", out / "per_image.csv", out / "buckets.csv",
          out / "summary.json", dataset="demo test", device="cpu")
    return out


def test_predict_writes_raw_and_composite(evaluated: Path, manifest: Path) -> None:
    test = read_manifest(manifest, "test")
    for _, row in test.iterrows():
        raw = read_image(evaluated / "pred" / "raw" / f"{row['id']}.png")
        comp = read_image(evaluated / "pred" / "composite" / f"{row['id']}.png")
        corrupted = read_image(row["corrupted"])
        mask = read_image(row["mask"], cv2.IMREAD_GRAYSCALE) > 127
        assert raw.shape == comp.shape == corrupted.shape
        np.testing.assert_array_equal(comp[~mask], corrupted[~mask])  # input kept outside holes
        np.testing.assert_array_equal(comp[mask], raw[mask])           # prediction inside
    info = json.loads((evaluated / "pred" / "predict.json").read_text())
    assert info["images"] == len(test) and info["inference_s_per_image"] > 0
    assert info["parameters"] == 3_835_907 and "CPU" in info["device"]
    assert info["experiment"] == info["architecture"] == "baseline"
    # 8 training images, batch 4, 1 epoch
    assert {k: info["budget"][k] for k in ("epochs", "steps", "images_seen", "batch_size")} == \
        {"epochs": 1, "steps": 2, "images_seen": 8, "batch_size": 4}


def test_summary_carries_budget_and_provenance(evaluated: Path, manifest: Path) -> None:
    from ndmha.provenance import sha256_file

    summary = json.loads((evaluated / "summary.json").read_text())
    assert summary["budget"]["train_seconds"] > 0 and "CPU" in summary["budget"]["train_device"]
    for stage in ("training", "evaluation"):
        block = summary["provenance"][stage]
        assert len(block["git_commit"]) == 40 and isinstance(block["git_dirty"], bool)
        assert block["manifest_sha256"] == sha256_file(manifest) and block["images"] == 12
        assert len(block["settings_sha256"]) == 64 and "CPU" in block["device"]
        assert block["torch"] and block["torchvision"] and block["python"]
        assert "cuda" in block and "cudnn" in block
    assert summary["provenance"]["evaluation"]["dataset"] == "demo test"
    assert summary["provenance"]["evaluation"]["wall_seconds"] > 0


@pytest.mark.parametrize("ratio, label", [(0.0, "0-10%"), (0.0999, "0-10%"), (0.1, "10-20%"),
                                          (0.55, "50-60%"), (0.6, "60-100%"), (1.0, "60-100%")])
def test_bucket_assignment(ratio: float, label: str) -> None:
    assert bucket_label(ratio) == label


def test_bucket_rejects_impossible_ratio() -> None:
    with pytest.raises(ValueError, match="outside"):
        bucket_label(1.2)


def test_score_without_weights_says_na(evaluated: Path, manifest: Path) -> None:
    per_image = pd.read_csv(evaluated / "per_image.csv", dtype={"id": str})
    test = read_manifest(manifest, "test")
    assert list(per_image["id"]) == list(test["id"])
    assert list(per_image.columns) == ["id", "hole_ratio", "bucket", "image_size", "psnr", "ssim",
                                       "l1", "lpips"]
    assert per_image["lpips"].isna().all()
    summary = json.loads((evaluated / "summary.json").read_text())
    # the same float64 values averaged by pandas, the CSV round-trips them exactly (repr)
    assert summary["psnr"] == pytest.approx(per_image["psnr"].mean(), rel=1e-15)
    assert 0 < summary["ssim"] <= 1 and summary["l1"] > 0
    assert summary["dataset"] == "demo test" and summary["image_size"] == 32
    assert summary["lpips"] == "n/a (weights not found: evaluation.lpips.weights is empty)"
    assert summary["fid"].startswith("n/a") and summary["kid"].startswith("n/a")
    buckets = pd.read_csv(evaluated / "buckets.csv")
    assert buckets["images"].sum() == len(test)
    assert list(buckets["bucket"]) == sorted(set(per_image["bucket"]),
                                             key=lambda b: int(b.split("-")[0]))
    for _, row in buckets.iterrows():
        members = per_image[per_image["bucket"] == row["bucket"]]
        assert row["psnr"] == pytest.approx(members["psnr"].mean(), rel=1e-15)


def test_score_with_weights(evaluated: Path, manifest: Path, tmp_path: Path,
                            alexnet_weights: Path, inception_weights: Path) -> None:
    summary = score(manifest, evaluated / "pred", tmp_path / "p.csv", tmp_path / "b.csv",
                    tmp_path / "s.json", lpips={"net": "alex", "weights": str(alexnet_weights)},
                    fid={"inception_weights": str(inception_weights)}, device="cpu")
    per_image = pd.read_csv(tmp_path / "p.csv")
    assert per_image["lpips"].notna().all() and (per_image["lpips"] >= 0).all()
    assert summary["lpips"] == pytest.approx(per_image["lpips"].mean(), rel=1e-15)
    assert isinstance(summary["fid"], float) and math.isfinite(summary["fid"])
    buckets = pd.read_csv(tmp_path / "b.csv")
    assert buckets["lpips"].notna().all()
    # FID per bucket where a bucket has two or more images, NaN otherwise
    assert (buckets["fid"].notna() == (buckets["images"] >= 2)).all()


def test_tables(evaluated: Path, tmp_path: Path) -> None:
    summary = json.loads((evaluated / "summary.json").read_text())
    table = write_tables(RESOURCES / "paper_benchmark.csv", RESOURCES / "seed_report_results.csv",
                         [evaluated / "summary.json"], tmp_path / "t.csv", tmp_path / "t.md",
                         tmp_path / "test.csv", tmp_path / "e.csv", tmp_path / "e.md",
                         tmp_path / "s.csv", tmp_path / "s.md", tmp_path / "p.csv",
                         labels={"baseline": "baseline U-Net"},
                         references={"baseline": "baseline U-Net (seed report)"},
                         settings={"baseline": {"loss": {"l1": 1.0}}}, config_sha256="c0ffee")
    assert list(table["source"]).count("paper") == 10
    assert list(table["source"]).count("seed report") == 2
    ours = table[table["source"] == "measured"].iloc[0]
    assert ours["method"] == "baseline U-Net (ours)"
    assert ours["params_m"] == 3.835907  # 3,835,907 / 1e6, correctly rounded both ways
    assert ours["gmac"] == 6.6584576  # integer FLOP counts / 2e9: exact
    assert ours["gmac_at_size"] == ours["gmac"] / 64  # convs only: 32 px is exactly 1/64 of 256
    assert (ours["lpips"], ours["fid"], ours["kid"]) == ("n/a", "n/a", "n/a")
    assert ours["dataset"] == "demo test, 4 test images, 32px"
    assert ours["psnr_db"] == summary["psnr"]  # the table holds the summary's value
    assert (ours["epochs"], ours["steps"], ours["images_seen"], ours["batch"]) == (1, 2, 8, 4)
    assert ours["train_time_s"] > 0 and "CPU" in ours["train_device"]
    assert len(ours["git_commit"].split()[0]) == 10
    paper = table[table["method"] == "NDMHA (paper)"].iloc[0]
    assert (paper["psnr_db"], paper["gmac"]) == (28.19, 15.01)
    assert (paper["epochs"], paper["batch"], paper["images_seen"]) == (200, 1, 5_400_000)
    assert len(pd.read_csv(tmp_path / "t.csv")) == len(table) == 13
    md = (tmp_path / "t.md").read_text()
    assert md.count("\n|") == 14 and "not comparable" in md
    assert "Caveat: baseline U-Net (ours): LPIPS n/a (weights not found" in md
    assert "SSIM as Wang et al. define it" in md
    assert "Equal budget: every measured row trained 1 epochs, 2 optimizer steps" in md
    test = pd.read_csv(tmp_path / "test.csv", keep_default_na=False)  # "n/a" stays text
    assert test.iloc[0]["experiment"] == "baseline" and test.iloc[0]["lpips"] == "n/a"
    assert float(test.iloc[0]["loss"]) > 0  # the objective on the test split
    experiments = pd.read_csv(tmp_path / "e.csv")
    assert list(experiments["experiment"]) == ["baseline"]
    assert experiments.iloc[0]["loss_weights"] == "l1=1.0"
    assert experiments.iloc[0]["steps"] == 2 and experiments.iloc[0]["gmac"] == 6.65846
    seed = pd.read_csv(tmp_path / "s.csv")
    psnr = seed[seed["quantity"] == "psnr_db"].iloc[0]
    assert psnr["seed_report"] == 31.7106 and psnr["ours"] == pytest.approx(summary["psnr"],
                                                                            rel=5e-6)
    provenance = pd.read_csv(tmp_path / "p.csv")
    assert provenance.iloc[0]["config_sha256"] == "c0ffee"
    assert len(provenance.iloc[0]["manifest_sha256"]) == 64
    # the CSV keeps 6 significant digits (%.6g): rounding error < 5e-6 relative
    assert test.iloc[0]["psnr"] == pytest.approx(summary["psnr"], rel=5e-6)


def test_figures_are_written(evaluated: Path, manifest: Path, tmp_path: Path) -> None:
    data_samples(manifest, tmp_path / "data.png", n=3)
    model_figures(evaluated / "log.csv", manifest, evaluated / "pred", tmp_path / "curves.png",
                  tmp_path / "grid.png", "baseline", n_ids=3)
    comparison_figures(manifest, ["baseline", "copy"], [evaluated / "pred"] * 2,
                       [evaluated / "buckets.csv"] * 2, [evaluated / "log.csv"] * 2,
                       tmp_path / "cmp.png", tmp_path / "holes.png", tmp_path / "psnr.png",
                       n_ids=2)
    shapes = {}
    for name in ("data", "curves", "grid", "cmp", "holes", "psnr"):
        image = read_image(tmp_path / f"{name}.png")
        assert image.std() > 10, name  # not blank
        shapes[name] = image.shape
    # grids: one row per image; the prediction grid has 4 columns, the comparison 2 + models
    assert shapes["grid"][0] > shapes["cmp"][0]
    assert not list(tmp_path.glob(".*"))  # no temporary files left


def test_inpaint_command_on_a_demo_image(evaluated: Path, tmp_path: Path) -> None:
    from ndmha.data.demo import draw_face, draw_mask

    face = draw_face(50, seed=9, index=0)  # 50 px: not a multiple of 16, padded and cropped
    write_image(tmp_path / "face.png", face)
    write_image(tmp_path / "mask.png", draw_mask(100, seed=9, index=3))  # other size: resized
    for extra in ([], ["--size", "32"]):
        out = tmp_path / f"out{len(extra)}.png"
        subprocess.run([sys.executable, "-m", "ndmha", "inpaint", "--checkpoint",
                        str(evaluated / "model.pt"), "--image", str(tmp_path / "face.png"),
                        "--mask", str(tmp_path / "mask.png"), "--out", str(out), "--device",
                        "cpu", *extra], check=True, capture_output=True, text=True)
        result = read_image(out)
        assert result.shape == face.shape
        holes = cv2.resize(draw_mask(100, 9, 3), (50, 50), interpolation=cv2.INTER_NEAREST) > 127
        np.testing.assert_array_equal(result[~holes], face[~holes])  # known pixels kept
        assert np.abs(result[holes].astype(int) - face[holes]).mean() > 0


def test_inpaint_rejects_a_mask_without_holes(evaluated: Path, tmp_path: Path) -> None:
    from ndmha.__main__ import main
    from ndmha.errors import DataError

    write_image(tmp_path / "face.png", np.full((32, 32, 3), 128, np.uint8))
    write_image(tmp_path / "mask.png", np.zeros((32, 32), np.uint8))
    with pytest.raises(DataError, match="mask.png: the mask has no hole"):
        main(["inpaint", "--checkpoint", str(evaluated / "model.pt"), "--image",
              str(tmp_path / "face.png"), "--mask", str(tmp_path / "mask.png"), "--out",
              str(tmp_path / "o.png")])
    assert not (tmp_path / "o.png").exists()


def test_cli_help_lists_the_commands(capsys: pytest.CaptureFixture) -> None:
    from ndmha.__main__ import main

    assert main([]) == 0
    out = capsys.readouterr().out
    assert all(command in out for command in ("stats", "inpaint", "train"))
