"""Test inference, per-image metrics and the benchmark table."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from ndmha.evaluate import predict, score
from ndmha.data.split import read_manifest
from ndmha.io import read_image
from ndmha.table import benchmark_table
from ndmha.train import TrainSettings, train

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def evaluated(manifest: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("eval")
    train(manifest, out / "model.pt", out / "log.csv", out / "ckpt.pt",
          TrainSettings(model="baseline", epochs=1, batch_size=4, device="cpu"))
    predict(manifest, out / "model.pt", out / "pred", device="cpu")
    score(manifest, out / "pred", out / "per_image.csv", out / "summary.json", dataset="demo test")
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
    assert info["parameters"] == 3_835_907 and info["device"].startswith("cpu")


def test_score_per_image_and_summary(evaluated: Path, manifest: Path) -> None:
    per_image = pd.read_csv(evaluated / "per_image.csv", dtype={"id": str})
    test = read_manifest(manifest, "test")
    assert list(per_image["id"]) == list(test["id"])
    assert list(per_image.columns) == ["id", "hole_ratio", "psnr", "ssim", "l1"]
    summary = json.loads((evaluated / "summary.json").read_text())
    assert summary["psnr"] == pytest.approx(per_image["psnr"].mean())
    assert 0 < summary["ssim"] <= 1 and summary["l1"] > 0
    assert summary["dataset"] == "demo test" and summary["image_size"] == 32
    assert "data_range 1.0" in summary["metric_notes"]


def test_benchmark_table_rows(evaluated: Path, tmp_path: Path) -> None:
    resources = ROOT / "workflow" / "resources"
    table = benchmark_table(resources / "paper_benchmark.csv",
                            resources / "seed_report_results.csv",
                            [evaluated / "summary.json"], tmp_path / "t.csv", tmp_path / "t.md")
    assert list(table["source"]).count("paper") == 10
    assert list(table["source"]).count("seed report") == 2
    ours = table[table["source"] == "measured"].iloc[0]
    assert ours["method"] == "baseline U-Net (ours)"
    assert ours["params_m"] == pytest.approx(3.835907)
    assert ours["gmac"] == pytest.approx(6.658, abs=0.01)
    assert "demo test, 4 test images, 32px" == ours["dataset"]
    paper = table[table["method"] == "NDMHA (paper)"].iloc[0]
    assert (paper["psnr_db"], paper["gmac"]) == (28.19, 15.01)
    csv_back = pd.read_csv(tmp_path / "t.csv")
    assert len(csv_back) == len(table) == 13
    md = (tmp_path / "t.md").read_text()
    assert md.count("\n|") == 14 and "not comparable" in md
