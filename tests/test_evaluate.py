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
from ndmha.data.masks import bucket_label
from ndmha.evaluate import floor_psnr, predict, predict_training_free, score
from ndmha.figures import comparison_figures, data_samples, experiment_grid, training_curves
from ndmha.io import read_image, write_image
from ndmha.tables import Study, write_tables
from test_baseline import unet_gmac
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
    from ndmha.hashing import sha256_file

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


def test_provenance_reads_the_torchvision_version_without_importing_it() -> None:
    """A scoring job records torchvision's version as importing it would give it, without the
    import (about 3 s a job)."""
    code = ("import sys; from ndmha.provenance import software; v = software()['torchvision']; "
            "assert 'torchvision' not in sys.modules, 'imported'; import torchvision; "
            "print(v == torchvision.__version__, v)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("True "), out.stdout + out.stderr


@pytest.mark.parametrize("ratio, label", [(0.0, "0-10%"), (0.0999, "0-10%"), (0.1, "10-20%"),
                                          (0.55, "50-60%"), (0.6, "60-100%"), (1.0, "60-100%")])
def test_bucket_assignment(ratio: float, label: str) -> None:
    assert bucket_label(ratio) == label


@pytest.mark.parametrize("ratio", [1.2, -0.01])
def test_bucket_rejects_impossible_ratio(ratio: float) -> None:
    with pytest.raises(ValueError, match=f"hole ratio {ratio} is outside"):
        bucket_label(ratio)


def test_buckets_come_in_their_order_and_keep_a_full_hole() -> None:
    """pandas.cut's buckets: ordered as BUCKETS whatever the images' order, 100 % in the last."""
    from ndmha.data.masks import BUCKETS, hole_buckets

    cut = hole_buckets([1.0, 0.05, 0.35, 0.6])
    assert list(cut.categories) == list(BUCKETS) and cut.ordered
    assert list(cut) == ["60-100%", "0-10%", "30-40%", "60-100%"]


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
    assert summary["lpips"].startswith("n/a (weights not found: alexnet-owt-7be5be79.pth not "
                                       "found; searched ")
    assert summary["fid"].startswith("n/a") and summary["kid"].startswith("n/a")
    buckets = pd.read_csv(evaluated / "buckets.csv")
    assert buckets["images"].sum() == len(test)
    assert list(buckets["bucket"]) == sorted(set(per_image["bucket"]),
                                             key=lambda b: int(b.split("-")[0]))
    for _, row in buckets.iterrows():
        members = per_image[per_image["bucket"] == row["bucket"]]
        assert row["psnr"] == pytest.approx(members["psnr"].mean(), rel=1e-15)


def test_score_with_weights(evaluated: Path, manifest: Path, tmp_path: Path,
                            alexnet_weights: Path, inception_weights: Path, trust) -> None:
    trust("alexnet", alexnet_weights)
    trust("inception", inception_weights)
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


def study(summaries: list[Path], **given: object) -> Study:
    """The tables' inputs for these tests: the reference tables and one U-Net experiment."""
    return Study(summaries=summaries, paper_csv=RESOURCES / "paper_benchmark.csv",
                 seed_report_csv=RESOURCES / "seed_report_results.csv",
                 **{"labels": {"baseline": "baseline U-Net"}, "config_sha256": "c0ffee",
                    "settings": {"baseline": {"loss": {"l1": 1.0}}}, **given})


def test_write_tables_names_an_unknown_family(evaluated: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no table family \\['flor'\\]"):
        write_tables(study([evaluated / "summary.json"]), tmp_path, ("floor", "flor"))


def test_a_metric_switched_off_reads_off_in_the_tables(evaluated: Path, tmp_path: Path) -> None:
    summary = json.loads((evaluated / "summary.json").read_text())
    summary.update(lpips="off", fid="off", fid_clean="off", kid="off", kid_std="off")
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    table = write_tables(study([tmp_path / "summary.json"]), tmp_path, ("benchmark",))
    ours = table[table["source"] == "measured"].iloc[0]
    assert (ours["lpips"], ours["fid"], ours["kid"]) == ("off", "off", "off")
    md = " ".join((tmp_path / "benchmark.md").read_text().split())
    assert "Caveat: baseline U-Net (ours): LPIPS off (switched off in the config)" in md
    assert "n/a" not in md.split("Caveat")[0]


def test_tables(evaluated: Path, tmp_path: Path) -> None:
    summary = json.loads((evaluated / "summary.json").read_text())
    table = write_tables(study([evaluated / "summary.json"],
                               references={"baseline": "baseline U-Net (seed report)"}),
                         tmp_path, ("benchmark", "test_metrics", "experiments", "seed_report",
                                    "provenance"))
    assert not (tmp_path / "floor.csv").exists()  # only the families asked for
    assert list(table["source"]).count("paper") == 10
    assert list(table["source"]).count("seed report") == 2
    ours = table[table["source"] == "measured"].iloc[0]
    assert ours["method"] == "baseline U-Net (ours)"
    assert ours["params_m"] == 3.835907  # 3,835,907 / 1e6, correctly rounded both ways
    assert ours["gmac"] == pytest.approx(unet_gmac(256), rel=1e-12)  # derived from its shapes
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
    assert len(pd.read_csv(tmp_path / "benchmark.csv")) == len(table) == 13
    md = (tmp_path / "benchmark.md").read_text()
    assert md.count("\n|") == 14
    md = " ".join(md.split())  # the notes under the table are wrapped at 100 characters
    assert "not comparable" in md
    assert "Caveat: baseline U-Net (ours): LPIPS n/a (weights not found" in md
    assert "SSIM as Wang et al. define it" in md
    assert "Equal budget: every trained row took 1 epochs, 2 optimizer steps" in md
    test = pd.read_csv(tmp_path / "test_metrics.csv", keep_default_na=False)  # "n/a" stays text
    assert test.iloc[0]["experiment"] == "baseline" and test.iloc[0]["lpips"] == "n/a"
    assert float(test.iloc[0]["loss"]) > 0  # the objective on the test split
    experiments = pd.read_csv(tmp_path / "experiments.csv")
    assert list(experiments["experiment"]) == ["baseline"]
    assert experiments.iloc[0]["loss_weights"] == "l1=1.0"
    assert experiments.iloc[0]["steps"] == 2
    assert experiments.iloc[0]["gmac"] == pytest.approx(unet_gmac(256), rel=5e-6)  # %.6g
    seed = pd.read_csv(tmp_path / "seed_report.csv")
    psnr = seed[seed["quantity"] == "psnr_db"].iloc[0]
    assert psnr["seed_report"] == 31.7106 and psnr["ours"] == pytest.approx(summary["psnr"],
                                                                            rel=5e-6)
    provenance = pd.read_csv(tmp_path / "provenance.csv")
    assert provenance.iloc[0]["config_sha256"] == "c0ffee"
    assert len(provenance.iloc[0]["manifest_sha256"]) == 64
    # the CSV keeps 6 significant digits (%.6g): rounding error < 5e-6 relative
    assert test.iloc[0]["psnr"] == pytest.approx(summary["psnr"], rel=5e-6)


def test_figures_are_written(evaluated: Path, manifest: Path, tmp_path: Path) -> None:
    data_samples(manifest, tmp_path / "data.png", n=3)
    training_curves(evaluated / "log.csv", tmp_path / "curves.png", "baseline")
    experiment_grid(manifest, evaluated / "pred", tmp_path / "grid.png", "baseline", n_ids=3)
    comparison_figures(manifest, ["baseline", "copy"], [evaluated / "pred"] * 2,
                       [evaluated / "buckets.csv"] * 2, [evaluated / "log.csv"] * 2,
                       tmp_path / "cmp.png", tmp_path / "holes.png", tmp_path / "psnr.png",
                       n_ids=2, floors=[evaluated / "summary.json"], floor_labels=["a floor"],
                       floor_methods=[{"architecture": "telea", "options": {}}])
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


def test_inpaint_rejects_a_mask_without_holes(evaluated: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    from ndmha.__main__ import main

    write_image(tmp_path / "face.png", np.full((32, 32, 3), 128, np.uint8))
    write_image(tmp_path / "mask.png", np.zeros((32, 32), np.uint8))
    code = main(["inpaint", "--checkpoint", str(evaluated / "model.pt"), "--image",
                 str(tmp_path / "face.png"), "--mask", str(tmp_path / "mask.png"), "--out",
                 str(tmp_path / "o.png")])
    assert code == 2  # bad input: one line on stderr naming the file, no traceback
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "mask.png: the mask has no hole" in err[0]
    assert not (tmp_path / "o.png").exists()


def test_cli_help_lists_the_commands(capsys: pytest.CaptureFixture) -> None:
    from ndmha.__main__ import main

    assert main([]) == 0
    out = capsys.readouterr().out
    assert all(command in out for command in ("stats", "inpaint", "train", "import-released",
                                              "export-test"))


def test_curves_figure_is_titled_with_the_experiment(evaluated: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The suptitle names the experiment (the axis labels once shadowed it: 'L1: ...')."""
    import ndmha.figures

    titles = []
    save = ndmha.figures._save
    monkeypatch.setattr(ndmha.figures, "_save",
                        lambda fig, path: (titles.append(fig._suptitle.get_text()),
                                           save(fig, path)))
    training_curves(evaluated / "log.csv", tmp_path / "curves.png", "my experiment")
    assert titles == ["my experiment: training curves"]


@pytest.fixture(scope="module")
def floor_run(manifest: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """OpenCV's Telea (radius 5) on the test split, scored like a network."""
    out = tmp_path_factory.mktemp("floor")
    predict_training_free(manifest, "floor", "telea", {"radius": 5}, out / "pred")
    score(manifest, out / "pred", out / "per_image.csv", out / "buckets.csv",
          out / "summary.json", dataset="demo test", device="cpu")
    return out


@pytest.mark.parametrize("method, flag", [("telea", cv2.INPAINT_TELEA),
                                          ("navier_stokes", cv2.INPAINT_NS)])
def test_training_free_is_cv2_inpaint_in_the_holes(method: str, flag: int, manifest: Path,
                                                   tmp_path: Path) -> None:
    """raw/ is cv2.inpaint's output; composite/ is the input outside the hole and cv2.inpaint's
    output inside it, byte for byte."""
    info = predict_training_free(manifest, "x", method, {"radius": 4}, tmp_path / "pred")
    test = read_manifest(manifest, "test")
    for _, row in test.iterrows():
        corrupted = read_image(row["corrupted"])
        holes = read_image(row["mask"], cv2.IMREAD_GRAYSCALE)
        expected = cv2.inpaint(corrupted, holes, 4, flag)
        raw = read_image(tmp_path / "pred" / "raw" / f"{row['id']}.png")
        comp = read_image(tmp_path / "pred" / "composite" / f"{row['id']}.png")
        inside = holes > 127
        assert inside.any() and (~inside).any()
        np.testing.assert_array_equal(raw, expected)
        np.testing.assert_array_equal(comp[inside], expected[inside])
        np.testing.assert_array_equal(comp[~inside], corrupted[~inside])
    assert info["kind"] == "training-free" and info["budget"] == {}
    assert info["parameters"] == 0 and info["images"] == len(test)
    assert info["options"] == {"radius": 4} and info["experiment"] == "x"


def test_biharmonic_fills_only_the_holes(manifest: Path, tmp_path: Path) -> None:
    predict_training_free(manifest, "b", "biharmonic", {}, tmp_path / "pred")
    row = read_manifest(manifest, "test").iloc[0]
    corrupted = read_image(row["corrupted"])
    holes = read_image(row["mask"], cv2.IMREAD_GRAYSCALE) > 127
    comp = read_image(tmp_path / "pred" / "composite" / f"{row['id']}.png")
    np.testing.assert_array_equal(comp[~holes], corrupted[~holes])
    assert comp[holes].mean() > 10  # the holes (0 in the input) are filled from their borders


def test_floor_psnr_equals_the_scored_composites(floor_run: Path, manifest: Path) -> None:
    """The floor the curves figure draws on another split is computed as the metrics rule
    scores (the same uint8 composites, the same float64 PSNR): on the test split, equal."""
    summary = json.loads((floor_run / "summary.json").read_text())
    assert floor_psnr(manifest, "test", "telea", {"radius": 5}) == pytest.approx(
        summary["psnr"], rel=1e-12)  # the same values, summed in another order


def test_tables_carry_the_floor(evaluated: Path, floor_run: Path, tmp_path: Path) -> None:
    summaries = [evaluated / "summary.json", floor_run / "summary.json"]
    trained = json.loads(summaries[0].read_text())
    floor = json.loads(summaries[1].read_text())
    table = write_tables(study(summaries, labels={"baseline": "baseline U-Net",
                                                  "floor": "OpenCV Telea"}),
                         tmp_path, ("benchmark", "experiments", "floor"))
    out = {"t.md": tmp_path / "benchmark.md", "e.md": tmp_path / "experiments.md",
           "e.csv": tmp_path / "experiments.csv", "f.md": tmp_path / "floor.md",
           "f.csv": tmp_path / "floor.csv"}
    row = table[table["kind"] == "training-free"].iloc[0]
    assert row["method"] == "OpenCV Telea (training-free, measured here)"
    assert row["train_device"] == "none: training-free" and row["steps"] == 0
    assert row["params_m"] == 0 and pd.isna(row["gmac"])
    assert row["psnr_db"] == floor["psnr"]
    md = " ".join(out["t.md"].read_text().split())  # the notes are wrapped
    # the budget note is over the trained row only: one row, so an equal budget
    assert "Equal budget: every trained row took 1 epochs" in md
    margin = trained["psnr"] - floor["psnr"]
    verdict = "every trained model clears" if margin > 0.5 else "no trained model clears"
    sentence = f"At this budget {verdict} the training-free floor (OpenCV Telea, "
    for path in (out["t.md"], out["e.md"], out["f.md"]):
        assert sentence in " ".join(path.read_text().split()), path
    floor_table = pd.read_csv(out["f.csv"])
    assert list(floor_table["experiment"]) == ["baseline"]
    assert floor_table.iloc[0]["psnr_margin_db"] == pytest.approx(margin, rel=5e-6)  # %.6g
    assert floor_table.iloc[0]["clears_floor"] == ("yes" if margin > 0.5 else "no")
    experiments = pd.read_csv(out["e.csv"])
    assert list(experiments["kind"]) == ["trained", "training-free"]
    assert experiments.iloc[1]["loss_weights"] == "none: training-free"


def test_floor_sentence_without_a_floor(evaluated: Path) -> None:
    from ndmha.tables import floor_table

    table, sentence = floor_table([json.loads((evaluated / "summary.json").read_text())])
    assert table.empty and sentence.startswith("No training-free floor in this run")


def test_external_predictions_name_a_missing_id(manifest: Path, tmp_path: Path) -> None:
    from ndmha.errors import DataError
    from ndmha.evaluate import predict_external

    ids = list(read_manifest(manifest, "test")["id"])
    folder = tmp_path / "theirs"
    folder.mkdir()
    for i in ids[1:]:  # the first one is missing
        write_image(folder / f"{i}.png", np.zeros((8, 8, 3), np.uint8))
    spec = {"dir": str(folder), "pattern": "{id}.png", "composited": False,
            "interpolation": "bicubic"}
    with pytest.raises(DataError, match=rf"no prediction for test id {ids[0]}\.png .*\(1 of "
                                         rf"the {len(ids)} test ids missing\)"):
        predict_external(manifest, tmp_path / "out", "theirs", spec)
    assert not (tmp_path / "out").exists()


def test_external_predictions_are_composited_with_our_masks(manifest: Path,
                                                            tmp_path: Path) -> None:
    """Another method's images (white everywhere here) enter the composite in our holes only,
    or whole when they say they are already composited."""
    from ndmha.evaluate import predict_external

    frame = read_manifest(manifest, "test")
    folder = tmp_path / "theirs"
    folder.mkdir()
    for row in frame.itertuples():
        shape = read_image(row.corrupted).shape
        write_image(folder / f"{row.id}.png", np.full(shape, 255, np.uint8))
    spec = {"dir": str(folder), "pattern": "{id}.png", "interpolation": "bicubic"}
    predict_external(manifest, tmp_path / "raw", "theirs", {**spec, "composited": False})
    predict_external(manifest, tmp_path / "as_is", "theirs", {**spec, "composited": True})
    for row in frame.itertuples():
        holes = read_image(row.mask, cv2.IMREAD_GRAYSCALE) > 0
        mixed = read_image(tmp_path / "raw" / "composite" / f"{row.id}.png")
        assert (mixed[holes] == 255).all()
        assert np.array_equal(mixed[~holes], read_image(row.corrupted)[~holes])
        assert (read_image(tmp_path / "as_is" / "composite" / f"{row.id}.png") == 255).all()


def test_a_cpu_device_is_named_with_its_thread_count() -> None:
    """The device a row names (train_device, the scorecard's runtime) counts its threads in
    words: "(1 thread)", "(2 threads)"."""
    import torch

    from ndmha.devices import device_name
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert device_name(torch.device("cpu")).endswith(" CPU (1 thread)")
        torch.set_num_threads(2)
        assert device_name(torch.device("cpu")).endswith(" CPU (2 threads)")
    finally:
        torch.set_num_threads(before)
