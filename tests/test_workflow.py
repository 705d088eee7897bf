"""The Snakemake workflow end to end on a tiny config, and its config checks."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from ndmha.tables.floor import FLOOR_MARGIN_DB

ROOT = Path(__file__).resolve().parents[1]

TINY = {
    "results_dir": "results with spaces",  # every rule must cope with spaces in paths
    "data": {"source": "demo", "name": "tiny demo", "n_images": 12, "image_size": 32,
             "jpg_quality": 90, "mask_hole": "white"},
    "demo": {"image_size": 48, "mask_size": 48, "hole_ratio": [0.05, 0.6], "seed": 1},
    "split": {"scheme": "paper", "test": 4, "seed": 0},
    "models": ["baseline", "ndmha", "telea"],
    "train": {"epochs": 1, "batch_size": 4, "lr": 2.0e-4, "betas": [0.5, 0.99], "seed": 0,
              "device": "cpu", "num_workers": 0, "per_model": {"ndmha": {"batch_size": 2}}},
    "loss": {"baseline": {"l1": 1.0},
             "ndmha": {"l1": 1.0, "adversarial": 0.01, "perceptual": 0.1, "edge": 0.5}},
    "perceptual": {"vgg19_weights": "", "allow_random_perceptual": True},
    "ndmha": {"deform_backend": "torch"},
    "evaluation": {"lpips": {"net": "alex", "weights": ""}, "fid": {"inception_weights": ""},
                   "grid_images": 3, "allow_missing_weights": True},
    "resources": {"prepare": {"threads": 2}, "train": {"threads": 2, "mem_mb": 1000},
                  "evaluate": {"threads": 1}},
}
#: --config overrides that let a real-data config's DAG build without the pretrained files
WEIGHTS_ALLOWED_MISSING = ("perceptual={allow_random_perceptual: true}",
                           "evaluation={allow_missing_weights: true}")
MODELS = ("baseline", "ndmha")  # the trained experiments
FLOORS = ("telea",)             # the training-free ones


def snakemake_command(workdir: Path, config: dict | Path, *args: str) -> list[str]:
    """The command that runs the workflow in ``workdir`` with ``config`` (a dict, written to
    ``workdir/config.yaml`` here, or a file)."""
    workdir.mkdir(parents=True, exist_ok=True)
    if isinstance(config, dict):
        path = workdir / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        config = path
    return [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory",
            str(workdir), "--configfile", str(config), *args]


def snakemake(workdir: Path, config: dict | Path, *args: str) -> subprocess.CompletedProcess:
    """Run the workflow locally on 2 cores (see :func:`snakemake_command`)."""
    return subprocess.run(snakemake_command(workdir, config, "--cores", "2", *args),
                          capture_output=True, text=True, timeout=600)


def _with(**changes: dict) -> dict:
    """TINY with sections updated (a value of None removes the key)."""
    config = json.loads(json.dumps(TINY))
    for section, values in changes.items():
        if values is None:
            config.pop(section)
        elif isinstance(values, dict) and isinstance(config.get(section), dict):
            config[section].update(values)
        else:
            config[section] = values
    return config


def report_files(html: str) -> dict[str, str]:
    """The text files a Snakemake report embeds (``data:...;filename=<name>;base64,...``)."""
    import base64
    import re

    return {m[1]: base64.b64decode(m[2]).decode("utf-8", "replace")
            for m in re.finditer(r"data:text/[a-z]+;charset=utf8;filename=([^;]+);base64,"
                                 r"([A-Za-z0-9+/=]+)", html)}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("workflow")
    result = snakemake(workdir, TINY)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir / TINY["results_dir"]


@pytest.mark.long
def test_every_output_is_written(tiny_run: Path) -> None:
    assert len(list((tiny_run / "demo" / "images").glob("*.png"))) == 12
    assert len(list((tiny_run / "data" / "images").glob("*.jpg"))) == 12
    assert len(list((tiny_run / "data" / "masks").glob("*.png"))) == 12
    assert len(list((tiny_run / "data" / "corrupted").glob("*.png"))) == 12
    manifest = pd.read_csv(tiny_run / "data" / "manifest.csv", dtype={"id": str})
    assert manifest["split"].value_counts().to_dict() == {"train": 8, "test": 4}
    for model in MODELS:
        assert (tiny_run / "models" / model / "model.pt").is_file()
        assert (tiny_run / "checkpoints" / model / "last.pt").is_file()
        log = pd.read_csv(tiny_run / "models" / model / "train_log.csv")
        assert list(log["epoch"]) == [1]
        for kind in ("raw", "composite"):
            assert len(list((tiny_run / "predictions" / model / kind).glob("*.png"))) == 4
        per_image = pd.read_csv(tiny_run / "metrics" / model / "per_image.csv")
        assert len(per_image) == 4 and per_image["psnr"].notna().all()
        buckets = pd.read_csv(tiny_run / "metrics" / model / "buckets.csv")
        assert buckets["images"].sum() == 4
        for figure in ("curves", "predictions"):
            assert (tiny_run / "figures" / model / f"{figure}.png").stat().st_size > 1000
    for floor in FLOORS:  # predicted and scored like a network, never trained
        assert not (tiny_run / "models" / floor).exists()
        assert not (tiny_run / "checkpoints" / floor).exists()
        assert not (tiny_run / "figures" / floor / "curves.png").exists()
        assert (tiny_run / "figures" / floor / "predictions.png").stat().st_size > 1000
        for kind in ("raw", "composite"):
            assert len(list((tiny_run / "predictions" / floor / kind).glob("*.png"))) == 4
        assert len(pd.read_csv(tiny_run / "metrics" / floor / "per_image.csv")) == 4
    per_experiment = [f"{step}_{m}" for step in ("train", "predict", "metrics",
                                                 "training_curves", "prediction_grid")
                      for m in MODELS] + [f"{step}_{m}" for step in ("predict", "metrics",
                                                                     "prediction_grid")
                                          for m in FLOORS]
    for job in ("demo_data", "sources", "convert_0", "masks_0", "overlay_0", "gather", "split",
                "tables", "data_figure",
                "comparison_figures", *per_experiment):
        benchmark = pd.read_csv(tiny_run / "benchmarks" / f"{job}.tsv", sep="\t")
        assert {"s", "max_rss"} <= set(benchmark.columns), job  # Snakemake's benchmark: record
    for model in MODELS:  # TensorBoard event files, outside the outputs
        assert list((tiny_run / "tensorboard" / model).glob("events.out.tfevents.*"))
    ndmha_log = pd.read_csv(tiny_run / "models" / "ndmha" / "train_log.csv")
    assert {"train_loss_adversarial", "train_loss_perceptual", "train_loss_edge",
            "train_d_loss"} <= set(ndmha_log.columns)
    train_log = (tiny_run / "logs" / "train_ndmha.log").read_text()
    assert "RANDOM VGG19" in train_log  # the random perceptual network is said out loud
    assert "8 train images (fixed masks), 4 test images monitored, batch 2" in train_log  # per_model
    assert "batch 4" in (tiny_run / "logs" / "train_baseline.log").read_text()
    for figure in ("data_samples", "comparison", "metrics_vs_hole"):
        assert (tiny_run / "figures" / f"{figure}.png").stat().st_size > 1000
    for rule in ("demo_data", "sources", "convert_0", "masks_0", "overlay_0", "gather", "split",
                 "tables", "data_figure", "comparison_figures", *per_experiment):
        assert (tiny_run / "logs" / f"{rule}.log").stat().st_size > 0, rule
    assert "image -> JPG: 100%" in (tiny_run / "logs" / "convert_0.log").read_text()
    assert not list(tiny_run.rglob("*.partial"))  # no staging folder left behind


def test_table_has_paper_and_measured_rows(tiny_run: Path) -> None:
    table = pd.read_csv(tiny_run / "tables" / "benchmark.csv")
    assert len(table) == 15
    assert table["method"].iloc[:10].tolist()[-1] == "NDMHA (paper)"
    measured = table[table["source"] == "measured"].reset_index(drop=True)
    assert measured["method"].tolist() == ["baseline U-Net (ours)", "NDMHA (ours)",
                                           "OpenCV Telea (training-free, measured here)"]
    assert measured["kind"].tolist() == ["trained", "trained", "training-free"]
    floor = measured.iloc[2]
    assert floor["train_device"] == "none: training-free" and floor["params_m"] == 0
    assert floor["dataset"] == "tiny demo, 4 test images, 32px"  # the same test images
    ours = measured.iloc[:2]
    for i, model in enumerate(MODELS):
        summary = json.loads((tiny_run / "metrics" / model / "summary.json").read_text())
        # benchmark.csv keeps 6 significant digits (%.6g): rounding error < 5e-6 relative
        assert ours["psnr_db"][i] == pytest.approx(summary["psnr"], rel=5e-6)
        assert ours["dataset"][i] == "tiny demo, 4 test images, 32px"
    # the design target of docs/architecture.md: the paper's ~4.1 M within 10 %, and its 15.01
    # GMAC counted as the paper most likely counted (without the deformable convs)
    assert ours["params_m"][1] == pytest.approx(4.1, rel=0.1)
    assert ours["gmac_without_deformable"][1] <= 15.01 < ours["gmac"][1]
    md = (tiny_run / "tables" / "benchmark.md").read_text()
    cells = re.sub(r" +\|", " |", md)  # the Markdown's column padding aside
    # the Markdown names a measured row by its experiment and its label below the table
    assert "| baseline | ours |" in cells and "| ndmha | ours |" in cells
    assert "- baseline: baseline U-Net" in md and "every column" in md.lower()
    md = " ".join(md.split())  # the notes under the table are wrapped at 100 characters
    assert "Caveat: NDMHA (ours): perceptual loss used random VGG19 weights" in md
    assert "Caveat: NDMHA (ours): LPIPS n/a (weights not found" in md
    assert "the training-free floor (OpenCV Telea, " in md
    floors = pd.read_csv(tiny_run / "tables" / "floor.csv")
    assert list(floors["experiment"]) == list(MODELS) and set(floors["floor"]) == {"OpenCV Telea"}
    test = pd.read_csv(tiny_run / "tables" / "test_metrics.csv", keep_default_na=False)
    assert list(test["experiment"]) == [*MODELS, *FLOORS] and set(test["fid"]) == {"n/a"}
    # the shorthand `models:` trains each model as an experiment named after it, with the
    # tiny config's budgets: baseline 1 epoch of 2 batches of 4, ndmha 4 batches of 2
    assert list(ours["epochs"]) == [1, 1] and list(ours["steps"]) == [2, 4]
    assert list(ours["images_seen"]) == [8, 8] and list(ours["batch"]) == [4, 2]
    assert "Budgets differ" in md
    experiments = pd.read_csv(tiny_run / "tables" / "experiments.csv")
    assert list(experiments["label"]) == ["baseline U-Net", "NDMHA", "OpenCV Telea"]


def test_every_markdown_table_fits_a_screen(tiny_run: Path) -> None:
    """Every .md under the results is for a reader: no line wider than MAX_WIDTH (130), and
    each names the CSV that keeps every column."""
    from ndmha.tables.format import MAX_WIDTH

    written = sorted(tiny_run.rglob("*.md"))
    assert {p.name for p in written} >= {"benchmark.md", "experiments.md", "comparisons.md",
                                         "floor.md", "scorecard.md", "seed_report.md"}
    for path in written:
        lines = path.read_text().splitlines()
        assert max(len(line) for line in lines) <= MAX_WIDTH, path
        if path.name != "seed_report.md":
            assert "Every column, in full precision, is in " in " ".join(lines), path


def test_scorecard_has_a_row_a_claim(tiny_run: Path) -> None:
    from ndmha.tables.scorecard import CLAIMS

    card = pd.read_csv(tiny_run / "tables" / "scorecard.csv")
    assert list(card["claim_id"]) == [c.claim_id for c in CLAIMS]
    # the tiny run's seed-report U-Net is the seed report's network: its count is exact
    assert card.set_index("claim_id").loc["seed_unet_parameters", "verdict"] == "reproduced"
    assert card.set_index("claim_id").loc["paper_psnr", "verdict"] == "not testable here"


@pytest.mark.long
def test_gpu_study_runner_is_the_workflows_chain(tiny_run: Path, tmp_path: Path) -> None:
    """study/gpu_study.py (the 8,000-step study on a GPU machine, which has no Snakemake) on the
    CPU: stopped at its deadline it exits 75 and says the run is unfinished; called again it
    resumes, finishes and scores the test split; the model is the workflow's, to the bit."""
    config = tiny_run.parent / "config.yaml"
    cmd = [sys.executable, str(ROOT / "study" / "gpu_study.py"), "--config", str(config),
           "--data", str(tiny_run / "data"), "--experiments", "ndmha", "--seeds", "0",
           "--device", "cpu", "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out")]
    stopped = subprocess.run([*cmd, "--deadline-s", "0"], capture_output=True, text=True,
                             timeout=600)
    assert stopped.returncode == 75, (stopped.stdout + stopped.stderr)[-2000:]
    first = pd.read_csv(tmp_path / "out" / "runs.csv")
    assert first["finished"].tolist() == [False]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-2000:]
    runs = pd.read_csv(tmp_path / "out" / "runs.csv")
    row = runs.iloc[0]
    assert (row["experiment"], row["seed"], row["steps"], bool(row["finished"])) == \
        ("ndmha", 0, 4, True)
    assert (tmp_path / "out" / "ndmha.seed0" / "train_log.csv").exists()
    # the same settings and seed (TINY's train.seed is 0) as the workflow's ndmha: the same
    # weights, so the same test scores (runs.csv rounds PSNR to 3 decimals)
    ours = json.loads((tiny_run / "metrics" / "ndmha" / "summary.json").read_text())
    assert row["psnr"] == round(ours["psnr"], 3) and row["test_images"] == ours["images"]


def test_the_protocol_card_names_the_test_set_everywhere(tiny_run: Path) -> None:
    """protocol.json, protocol.md, the report's front page and every table's Markdown name the
    same test masks; the metrics without their weights say so (the tiny run has none)."""
    card = json.loads((tiny_run / "tables" / "protocol.json").read_text())
    masks = card["masks"]["test_set_sha256"]
    assert card["split"]["test"] == TINY["split"]["test"] and card["resolution"] == 32
    assert card["metrics"]["lpips"].endswith("n/a, weights missing (alexnet-owt-7be5be79.pth)")
    # FID two ways, each column in the tables; without the Inception weights both read n/a
    summary = json.loads((tiny_run / "metrics" / "ndmha" / "summary.json").read_text())
    assert summary["fid_clean"] == summary["fid"] and summary["fid"].startswith("n/a")
    benchmark = pd.read_csv(tiny_run / "tables" / "benchmark.csv", keep_default_na=False)
    assert {"fid", "fid_clean"} <= set(benchmark.columns)
    assert (benchmark.loc[benchmark["source"] == "measured", "fid_clean"] == "n/a").all()
    assert masks in (tiny_run / "tables" / "report_front.rst").read_text()
    for md in (tiny_run / "tables").glob("*.md"):
        assert masks[:12] in md.read_text(), md.name
    # the comparisons by hole size: every pair's PSNR rows end on its trend
    buckets = pd.read_csv(tiny_run / "tables" / "buckets.csv")
    compared = pd.read_csv(tiny_run / "tables" / "comparisons.csv")
    psnr = buckets[buckets["metric"] == "psnr"]
    trends = psnr[psnr["bucket"].str.startswith("trend")]
    assert len(trends) == (compared["metric"] == "psnr").sum() > 0
    assert (trends["images"] == TINY["split"]["test"]).all()


def test_report_has_every_section(tiny_run: Path) -> None:
    workdir = tiny_run.parent
    result = snakemake(workdir, workdir / "config.yaml", "--report",
                       f"{TINY['results_dir']}/report.html")
    assert result.returncode == 0, result.stderr[-2000:]
    html = (tiny_run / "report.html").read_text()
    for text in ("data", "baseline", "ndmha", "comparison", "experiments", "provenance",
                 "data_samples.png", "curves.png", "predictions.png", "comparison.png",
                 "metrics_vs_hole.png", "experiments_psnr.png", "benchmark.csv",
                 "test_metrics.csv", "experiments.csv", "seed_report.csv", "provenance.csv",
                 "floor.csv", "telea", "tiny demo", "comparisons.csv", "comparisons.png",
                 "scorecard.csv", "Reproduction scorecard", "NDMHA has 4.1 M parameters"):
        assert text in html, text
    # the report opens on the scorecard, before the workflow's description
    assert html.index("Reproduction scorecard") < html.index("Facial image inpainting study")
    embedded = report_files(html)  # the tables travel inside the HTML as data URIs
    assert "OpenCV Telea (training-free, measured here)" in embedded["benchmark.csv"]
    # the verdict the tiny run's own numbers give (one seed each: a margin above 0.5 dB)
    psnr = {name: json.loads((tiny_run / "metrics" / name / "summary.json").read_text())["psnr"]
            for name in ("ndmha", "telea")}
    clears = psnr["ndmha"] - psnr["telea"] > FLOOR_MARGIN_DB
    assert f"NDMHA {'clears' if clears else 'does not clear'} the training-free floor (OpenCV " \
           f"Telea, " in embedded["floor.csv"]


def test_rerun_has_nothing_to_do(tiny_run: Path) -> None:
    result = snakemake(tiny_run.parent, tiny_run.parent / "config.yaml", "-n")
    assert result.returncode == 0
    assert "Nothing to be done" in result.stdout + result.stderr


@pytest.mark.parametrize("changes, message", [
    ({"extra_key": 1}, "config key (top level): Additional properties are not allowed "
                       "('extra_key' was unexpected)"),
    ({"train": {"epochs": "two"}}, "config key train.epochs: 'two' is not of type 'integer'"),
    ({"train": {"epochs": -1}}, "config key train.epochs: -1 is less than the minimum of 1"),
    ({"data": {"image_size": 40}}, "config key data.image_size: 40 is not a multiple of 16"),
    ({"split": {"test": 12}}, "config key split.test: 12 test images leave none to train on"),
    ({"train": {"per_model": {"unet3": {"epochs": 2}}}},
     "config key train.per_model: 'unet3' is neither an experiment (['baseline', 'ndmha', "
     "'telea']) nor an architecture"),
    ({"models": None, "experiments": {"a": {"architecture": "unet9"}}},
     "config key experiments.a.architecture: 'unet9' is not one of "
     "['baseline', 'ndmha', 'ndmha_released', 'telea', 'navier_stokes', 'biharmonic']"),
    ({"models": None, "experiments": {"a": {"architecture": "telea", "loss": {"l1": 1.0}}}},
     "config key experiments.a: 'telea' is training-free: it takes no loss or train settings"),
    ({"models": None, "experiments": {"a": {"architecture": "telea",
                                            "options": {"radius": 0}}}},
     "config key experiments.a.options.radius: 0 is less than or equal to the minimum of 0"),
    ({"models": None, "experiments": {"a": {"architecture": "ndmha",
                                            "options": {"wdiths": [8, 16]}}}},
     "config key experiments.a.options: Additional properties are not allowed "
     "('wdiths' was unexpected)"),
    ({"models": None, "experiments": {"a": {"architecture": "ndmha", "train": {"epoch": 3}}}},
     "config key experiments.a.train: Unevaluated properties are not allowed "
     "('epoch' was unexpected)"),
    ({"models": None, "experiments": {"a": {"architecture": "ndmha_released"}}},
     "config key experiments.a.loss: no loss weights for experiment 'a' (give them there or "
     "under loss.ndmha_released)"),
    ({"experiments": {"a": {"architecture": "ndmha"}}},
     "config key experiments: give either models (one experiment per architecture) or "
     "experiments, not both"),
    ({"ndmha": {"deform_backend": "cuda"}},
     "config key ndmha.deform_backend: 'cuda' is not one of ['auto', 'fused', 'torchvision', "
     "'mmcv', 'torch']"),
    ({"loss": {"ndmha": {"l2": 1.0}}},
     "config key loss.ndmha: Additional properties are not allowed ('l2' was unexpected)"),
    ({"data": {"source": "folders", "images_dir": "/no/such/folder", "masks_dir": "/tmp"}},
     "config key data.images_dir: folder '/no/such/folder' does not exist"),
    ({"comparisons": [["ndmha", "unet"]]},
     "config key comparisons.0: 'unet' is neither an experiment (['baseline', 'ndmha', "
     "'telea']) nor 'floor'"),
    ({"models": None, "experiments": {"a": {"architecture": "ndmha", "weights": "/no/w.pt"}}},
     "config key experiments.a.weights: '/no/w.pt' does not exist"),
    ({"models": None, "experiments": {"a": {"predictions": {"dir": "/no/such/dir"}}}},
     "config key experiments.a.predictions.dir: '/no/such/dir' does not exist"),
    ({"models": None, "experiments": {"a": {"architecture": "telea", "weights": "/tmp"}}},
     "config key experiments.a.weights: 'telea' is training-free: it has no weights"),
    ({"models": None, "experiments": {"a": {"architecture": "ndmha", "weights": "/tmp",
                                            "init_from": "/tmp"}}},
     "config key experiments.a: give one of weights, init_from and predictions, not weights "
     "and init_from"),
    ({"models": None, "experiments": {"baseline": {"architecture": "baseline"},
                                      "a": {"architecture": "baseline", "reference": "b"}}},
     "config key experiments.a.reference: 'b' is not an experiment (['a', 'baseline'])"),
])
def test_bad_config_stops_before_any_job(tmp_path: Path, changes: dict, message: str) -> None:
    result = snakemake(tmp_path, _with(**changes), "-n")
    assert result.returncode != 0
    assert message in result.stdout + result.stderr
    assert not (tmp_path / TINY["results_dir"]).exists()


def test_full_reproduction_dry_run(tmp_path: Path) -> None:
    """configs/paper_celebahq.yaml: a clear stop while the data is missing, another while the
    pretrained weights are (the tests' torch hub cache is empty), the DAG once both are there
    (the weights stood in for by allowing them missing: their hashes cannot be forged)."""
    config = yaml.safe_load((ROOT / "configs" / "paper_celebahq.yaml").read_text())
    missing = snakemake(tmp_path, ROOT / "configs" / "paper_celebahq.yaml", "-n")
    assert missing.returncode != 0
    assert f"config key data.images_dir: folder '{config['data']['images_dir']}' does not exist" \
        in missing.stdout + missing.stderr
    (tmp_path / config["data"]["images_dir"]).mkdir(parents=True)
    (tmp_path / config["data"]["masks_dir"]).mkdir(parents=True)
    no_weights = snakemake(tmp_path, ROOT / "configs" / "paper_celebahq.yaml", "-n")
    assert no_weights.returncode != 0
    assert "pretrained weights missing: perceptual.vgg19_weights" in no_weights.stdout
    present = snakemake(tmp_path, ROOT / "configs" / "paper_celebahq.yaml", "-n", "--config",
                        *WEIGHTS_ALLOWED_MISSING)
    assert present.returncode == 0, present.stderr
    for rule in ("sources", "convert", "masks", "overlay", "gather", "split", "train", "predict",
                 "metrics",
                 "tables", "data_figure", "training_curves", "prediction_grid",
                 "comparison_figures"):
        assert f"rule {rule}:" in present.stdout
    assert "demo_data" not in present.stdout


def _dry_run(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    return subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"),
                           "--directory", str(workdir), "-n", *args],
                          capture_output=True, text=True, timeout=600)


def test_config_overrides_merge_over_the_demo_config(tmp_path: Path) -> None:
    """--config alone: config.yaml is loaded and the overrides merge over it, typed as in a
    config file (a nested value reaches the schema as an integer, not the string '50')."""
    result = _dry_run(tmp_path, "--config", "results_dir=results_alt", "train={epochs: 50}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "results_alt/models/ndmha/model.pt" in result.stdout
    assert "results/" not in result.stdout.replace("results_alt/", "")
    typed = _dry_run(tmp_path, "--config", "train={epochs: 0}")
    assert "config key train.epochs: 0 is less than the minimum of 1" in typed.stdout + typed.stderr


def test_config_overrides_merge_over_a_configfile(tmp_path: Path) -> None:
    """--configfile still replaces config.yaml (no demo rule), --config merges over it."""
    (tmp_path / "faces").mkdir()
    (tmp_path / "qd").mkdir()
    result = _dry_run(tmp_path, "--configfile", str(ROOT / "configs" / "paper_celebahq.yaml"),
                      "--config", f"data={{images_dir: {tmp_path / 'faces'}, "
                                  f"masks_dir: {tmp_path / 'qd'}}}", *WEIGHTS_ALLOWED_MISSING)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "rule train:" in result.stdout and "demo_data" not in result.stdout
    assert "results/celebahq/models/ndmha/model.pt" in result.stdout


def test_typed_command_line_values() -> None:
    from ndmha.config import typed

    raw = {"train": {"epochs": "50", "lr": "2e-4", "amp": "off", "compile": "true",
                     "betas": ["0.5", "0.99"]},
           "results_dir": "results 2026-01-01", "data": {"name": "nan", "images_dir": ""}}
    assert typed(raw) == {"train": {"epochs": 50, "lr": 2e-4, "amp": False, "compile": True,
                                    "betas": [0.5, 0.99]},
                          "results_dir": "results 2026-01-01",
                          "data": {"name": "nan", "images_dir": ""}}


def test_lint_is_clean() -> None:
    result = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"),
                             "--lint"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Congratulations, your workflow is in a good condition!" in result.stdout + result.stderr


def test_source_folders_with_spaces(tmp_path: Path) -> None:
    """data.source: folders, with spaces in every path, through the data rules."""
    from ndmha.data.demo import make_demo_dataset

    make_demo_dataset(tmp_path / "my data" / "face pngs", tmp_path / "my data" / "qd imd",
                      n_images=12, n_masks=14, size=40, mask_size=40, seed=2)
    config = _with(data={"source": "folders", "images_dir": "my data/face pngs",
                         "masks_dir": str(tmp_path / "my data" / "qd imd")})
    result = snakemake(tmp_path, config, "--until", "split")
    assert result.returncode == 0, result.stderr[-2000:]
    manifest = pd.read_csv(tmp_path / TINY["results_dir"] / "data" / "manifest.csv")
    assert len(manifest) == 12 and "demo" not in result.stdout + result.stderr


@pytest.mark.long
def test_seed_report_protocol_on_demo_data(tmp_path: Path) -> None:
    """configs/seed_report.yaml, switched to the demo data with --config as its header says
    (smaller here): the 60/20/20 split, the baseline validated on val, the baseline retrained on
    train + val and tested on test, the reduced NDMHA on its first N images; the seed report's
    numbers beside ours."""
    overrides = ["data={source: demo, name: tiny demo, n_images: 20, image_size: 32}",
                 "demo={image_size: 48, mask_size: 48}", "results_dir=seed run",
                 *WEIGHTS_ALLOWED_MISSING, "train={epochs: 1, batch_size: 4}",
                 "experiments={ndmha_reduced: {train: {max_train_images: 6, epochs: 2, "
                 "batch_size: 2}}}", "ndmha={deform_backend: torch}"]
    result = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"),
                             "--directory", str(tmp_path), "--cores", "2", "--configfile",
                             str(ROOT / "configs" / "seed_report.yaml"), "--config", *overrides,
                             "--until", "tables"], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    results = tmp_path / "seed run"
    manifest = pd.read_csv(results / "data" / "manifest.csv")
    assert manifest["split"].value_counts().to_dict() == {"train": 12, "val": 4, "test": 4}
    logs = {name: pd.read_csv(results / "models" / name / "train_log.csv")
            for name in ("baseline_split", "baseline_merged", "ndmha_reduced")}
    assert list(logs["baseline_split"]["val_split"]) == ["val"]      # (a): validated on val
    assert list(logs["baseline_merged"]["val_split"]) == ["test"]    # (b): val is trained on
    assert list(logs["baseline_merged"]["images"]) == [16]           # train + val, 1 epoch
    assert list(logs["ndmha_reduced"]["images"]) == [6, 12]          # 6 images, 2 epochs
    table = pd.read_csv(results / "tables" / "seed_report.csv")
    assert set(table["experiment"]) == {"baseline_merged", "ndmha_reduced"}
    psnr = table[(table["experiment"] == "baseline_merged") & (table["quantity"] == "psnr_db")]
    assert psnr["seed_report"].iloc[0] == 31.7106 and psnr["ours"].notna().all()
    reduced = table[table["experiment"] == "ndmha_reduced"].set_index("quantity")
    assert reduced.loc["psnr_db", "seed_report"] == 26.4289
    assert reduced.loc["train_images", "seed_report"] == 750 and \
        reduced.loc["train_images", "ours"] == 6
    assert "seed report" in (results / "tables" / "seed_report.md").read_text()


def test_ablation_config_is_valid_and_builds_its_dag(tmp_path: Path) -> None:
    """configs/ablation.yaml (run in full, it trains every experiment on the demo): every
    experiment is valid and gets its train, predict and metrics jobs."""
    import ndmha.config

    config = ndmha.config.compose(yaml.safe_load((ROOT / "configs" / "ablation.yaml").read_text()),
                                  ROOT)
    experiments = ndmha.config.resolve_experiments(config)
    result = _dry_run(tmp_path, "--configfile", str(ROOT / "configs" / "ablation.yaml"))
    assert result.returncode == 0, result.stderr[-2000:]
    trained = sum(e.trained for e in experiments.values())
    assert len(experiments) - trained == 3  # the floor: telea, navier_stokes, biharmonic
    for step, jobs in (("train", trained), ("predict", len(experiments)),
                       ("metrics", len(experiments))):
        assert result.stdout.count(f"rule {step}:") == jobs and trained >= 10


def test_training_free_jobs_ask_for_no_gpu(tmp_path: Path) -> None:
    """With GPUs asked for every evaluation job, the training-free experiments' predict and
    metrics jobs still ask for none (and have no train job); the networks' keep theirs."""
    config = _with(resources={"evaluate": {"threads": 1, "gpu": 1},
                              "train": {"threads": 2, "gpu": 1}})
    result = snakemake(tmp_path, config, "-n")
    assert result.returncode == 0, result.stderr[-2000:]
    jobs = {}
    for block in result.stdout.split("\n\n"):
        rule = re.search(r"rule (\w+):", block)
        wildcard = re.search(r"wildcards: experiment=(\S+)", block)
        resources = re.search(r"resources: (.*)", block)
        if rule and wildcard and resources:
            jobs[rule[1], wildcard[1]] = resources[1]
    for step in ("predict", "metrics"):
        assert "gpu=0" in jobs[step, "telea"], jobs[step, "telea"]
        for model in MODELS:
            assert "gpu=1" in jobs[step, model], jobs[step, model]
    assert ("train", "telea") not in jobs and "gpu=1" in jobs["train", "ndmha"]


def test_study_config_is_valid_and_monitors_a_validation_split(tmp_path: Path) -> None:
    """configs/study.yaml: valid, its DAG trains the six networks with three seeds each and scores the three training-free methods once,
    its split holds validation images out of training (the curves never monitor the test
    split), and its header's one-seed command gives one run per network."""
    import ndmha.config

    config = ndmha.config.compose(yaml.safe_load((ROOT / "configs" / "study.yaml").read_text()),
                                  ROOT)
    assert config["split"]["scheme"] == "paper" and config["split"]["val"] > 0
    experiments = ndmha.config.resolve_experiments(config)
    kinds = {e.group: e.kind for e in experiments.values()}
    assert sorted(n for n, k in kinds.items() if k == "trained") == [
        "baseline", "baseline_2000", "ndmha", "ndmha_8000", "ndmha_released",
        "ndmha_released_8000"]
    assert sorted(n for n, k in kinds.items() if k == "training-free") == [
        "biharmonic", "navier_stokes", "telea"]
    assert sorted(e.seed for e in experiments.values() if e.group == "ndmha") == [0, 1, 2]
    # the networks are compared with the U-Net trained at their budget, not the longer one
    pairs = ndmha.config.default_comparisons(experiments)
    assert ["ndmha", "baseline_2000"] in pairs and ["ndmha_released", "baseline_2000"] in pairs
    # and at 8,000 steps with the U-Net's 8,000 (the same train settings: an equal budget)
    assert ["ndmha_8000", "baseline"] in pairs and ["ndmha_released_8000", "baseline"] in pairs
    result = _dry_run(tmp_path, "--configfile", str(ROOT / "configs" / "study.yaml"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("rule train:") == 18 and result.stdout.count("rule predict:") == 21
    result = _dry_run(tmp_path, "--configfile", str(ROOT / "configs" / "study.yaml"),
                      "--config", "seeds=[0]")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("rule train:") == 6 and "baseline.seed0" in result.stdout
    # a part of the study: only its experiments' jobs, the tables over them
    result = _dry_run(tmp_path, "--configfile", str(ROOT / "configs" / "study.yaml"), "--config",
                      "only=[biharmonic, baseline_2000, ndmha_released]")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("rule train:") == 6 and result.stdout.count("rule predict:") == 7
    assert "ndmha.seed0" not in result.stdout and "telea" not in result.stdout


def test_ablations_run_on_the_study_data_with_both_configs(tmp_path: Path) -> None:
    """configs/ablation.yaml's header command: given before configs/study.yaml, the ablations
    join the study's experiments in the study's results folder (its data, split and training
    budget win), each trained once under ``seeds=[0]``, the floor scored once."""
    import ndmha.config

    ablation, study = (yaml.safe_load((ROOT / "configs" / name).read_text())
                       for name in ("ablation.yaml", "study.yaml"))
    merged = ndmha.config.compose(ndmha.config.merge(ablation, study), ROOT)  # as Snakemake does
    merged["seeds"] = [0]
    experiments = ndmha.config.resolve_experiments(merged)
    trained = [e.name for e in experiments.values() if e.trained]
    assert "ndmha_l1_only.seed0" in trained and "ndmha_plain_conv.seed0" in trained
    assert merged["train"]["epochs"] == study["train"]["epochs"] != ablation["train"]["epochs"]
    result = _dry_run(tmp_path, "--configfile", str(ROOT / "configs" / "ablation.yaml"),
                      str(ROOT / "configs" / "study.yaml"), "--config", "seeds=[0]")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("rule train:") == len(trained)
    assert result.stdout.count("rule predict:") == len(experiments)
    outputs = re.findall(r"output: (\S+)", result.stdout)
    assert outputs and all(o.startswith(study["results_dir"] + "/") for o in outputs), outputs
    assert "results/study/models/ndmha_l1_only.seed0/model.pt" in result.stdout


@pytest.mark.long
def test_imported_fine_tuned_and_external_experiments(tiny_run: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Experiments not trained here, through every rule: a model.pt imported under a new name
    (``weights``), the authors' checkpoint imported (``weights`` on ndmha_released), a
    fine-tuning run (``init_from``) and another method's outputs on a test set exported by
    ``ndmha export-test`` (``predictions``, at another size: resized and counted). Their rows
    reach benchmark.md and the HTML report with their kinds."""
    import cv2

    from test_foreign_weights import _release_net, _save_as_released

    trained = tiny_run / "models" / "baseline" / "model.pt"
    authors = tmp_path / "netG_model.pth"
    net = _release_net().float()
    _save_as_released(net, authors, monkeypatch)
    workdir = tmp_path / "run"
    base = _with(models=None, results_dir="results")
    # the same data as the tiny run: first the split, then the exported test set, filled
    # outside the workflow by a simple method (OpenCV's Navier-Stokes), at 40 px
    config = {**base, "models": ["telea"]}
    result = snakemake(workdir, config, "results/data/manifest.csv")
    assert result.returncode == 0, result.stderr[-2000:]
    exported = tmp_path / "exported"
    done = subprocess.run([sys.executable, "-m", "ndmha", "export-test", str(exported),
                           "--manifest", str(workdir / "results" / "data" / "manifest.csv"),
                           "--layout", "release"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    ids = sorted(p.stem for p in (exported / "input").glob("*.png"))
    assert len(ids) == 4 and sorted(p.stem for p in (exported / "mask").glob("*.png")) == ids
    outputs = tmp_path / "their outputs"
    outputs.mkdir()
    for i in ids:
        image = cv2.imread(str(exported / "input" / f"{i}.png"))
        mask = cv2.imread(str(exported / "mask" / f"{i}.png"), cv2.IMREAD_GRAYSCALE)
        filled = cv2.inpaint(image, mask, 3, cv2.INPAINT_NS)
        cv2.imwrite(str(outputs / f"{i}_out.png"), cv2.resize(filled, (40, 40)))
    lama = tmp_path / "lama"
    done = subprocess.run([sys.executable, "-m", "ndmha", "export-test", str(lama),
                           "--manifest", str(workdir / "results" / "data" / "manifest.csv")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in lama.iterdir()) == sorted(
        [f"{i}.png" for i in ids] + [f"{i}_mask.png" for i in ids])
    mat = tmp_path / "mat"  # MAT's: image/ and mask/, 0 in the holes, the same inputs
    done = subprocess.run([sys.executable, "-m", "ndmha", "export-test", str(mat), "--manifest",
                           str(workdir / "results" / "data" / "manifest.csv"), "--layout", "mat"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    for i in ids:
        ours = cv2.imread(str(lama / f"{i}_mask.png"), cv2.IMREAD_GRAYSCALE)
        theirs = cv2.imread(str(mat / "mask" / f"{i}.png"), cv2.IMREAD_GRAYSCALE)
        assert (theirs == 255 - ours).all() and ours.any()
        assert (cv2.imread(str(mat / "image" / f"{i}.png")) ==
                cv2.imread(str(lama / f"{i}.png"))).all()

    config = {**base, "experiments": {
        "telea": {"architecture": "telea"},
        "baseline_elsewhere": {"architecture": "baseline", "weights": str(trained)},
        "authors": {"architecture": "ndmha_released", "weights": str(authors)},
        "baseline_tuned": {"architecture": "baseline", "init_from": str(trained),
                           "train": {"epochs": 1}},
        "navier_stokes_outside": {"predictions": {"dir": str(outputs),
                                                  "pattern": "{id}_out.png"}}}}
    result = snakemake(workdir, config)
    assert result.returncode == 0, result.stderr[-3000:]
    results = workdir / "results"
    assert not (results / "checkpoints" / "baseline_elsewhere").exists()  # no train job
    assert not (results / "checkpoints" / "authors").exists()
    assert (results / "checkpoints" / "baseline_tuned" / "last.pt").is_file()
    tuned = json.loads((results / "metrics" / "baseline_tuned" / "summary.json").read_text())
    start = tuned["budget"]["init_from"]
    assert start["file"] == "model.pt" and start["steps_before"] == 2 and tuned["budget"]["steps"] == 2
    assert "fine-tuning baseline_tuned" in (results / "logs" / "train_baseline_tuned.log").read_text()
    outside = json.loads((results / "metrics" / "navier_stokes_outside" / "summary.json")
                         .read_text())
    assert outside["kind"] == "external" and outside["images"] == 4
    assert outside["warnings"] == ["4 of 4 predictions resized to 32x32 (bicubic)"]
    imported = json.loads((results / "metrics" / "baseline_elsewhere" / "summary.json").read_text())
    original = json.loads((tiny_run / "metrics" / "baseline" / "summary.json").read_text())
    assert imported["kind"] == "imported" and imported["experiment"] == "baseline_elsewhere"
    assert imported["psnr"] == pytest.approx(original["psnr"], abs=1e-9)  # same weights, data
    authors_summary = json.loads((results / "metrics" / "authors" / "summary.json").read_text())
    assert authors_summary["kind"] == "imported"
    assert authors_summary["warnings"] == [
        "the authors' checkpoint was trained at 256 px; scored here at 32 px"]

    table = pd.read_csv(results / "tables" / "benchmark.csv").set_index("method")
    for row, kind in (("baseline_elsewhere (imported weights, measured here)", "imported"),
                      ("authors (imported weights, measured here)", "imported"),
                      ("navier_stokes_outside (external predictions, measured here)", "external"),
                      ("baseline_tuned (ours)", "trained")):
        assert table.loc[row, "kind"] == kind
    assert table.loc["authors (imported weights, measured here)", "train_device"] == \
        "not trained here: imported weights"
    md = " ".join((results / "tables" / "benchmark.md").read_text().split())  # prose is wrapped
    assert "may contain our test images or masks" in md and "External rows" in md
    result = snakemake(workdir, workdir / "config.yaml", "--report", "results/report.html")
    assert result.returncode == 0, result.stderr[-2000:]
    embedded = report_files((results / "report.html").read_text())
    assert "navier_stokes_outside (external predictions, measured here)" in \
        embedded["benchmark.csv"]
    assert "authors (imported weights, measured here)" in embedded["benchmark.csv"]


def test_celebahq_config_shows_every_kind_and_it_is_valid(tmp_path: Path) -> None:
    """The commented experiments section of configs/paper_celebahq.yaml, uncommented with its paths
    filled in, is a valid config with one experiment of each kind."""
    import ndmha.config

    text = (ROOT / "configs" / "paper_celebahq.yaml").read_text()
    block = text[text.index("# experiments:"):].split("\n\n")[0]
    uncommented = "\n".join(line[2:] for line in block.splitlines())
    for folder in ("NDMA_Facial_Inpainting/checkpoints", "lama/outputs"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "NDMA_Facial_Inpainting/checkpoints/netG_model.pth").write_bytes(b"x")
    config = yaml.safe_load(text.replace("models: [", "# models: [", 1))
    config.update(yaml.safe_load(uncommented.replace("/path/to", str(tmp_path))))
    config = ndmha.config.compose(config, ROOT)  # over config.yaml, whose models it replaces
    kinds = {n: e.kind for n, e in ndmha.config.resolve_experiments(config).items()}
    assert kinds["authors_checkpoint"] == "imported" and kinds["lama"] == "external"
    assert kinds["authors_finetuned"] == "trained" and kinds["biharmonic"] == "training-free"
    workdir = tmp_path / "w"
    workdir.mkdir()
    for key in ("images_dir", "masks_dir"):  # the data folders must exist for the checks
        (tmp_path / key).mkdir()
        config["data"][key] = str(tmp_path / key)
    config["perceptual"]["allow_random_perceptual"] = True  # no pretrained files here
    config["evaluation"]["allow_missing_weights"] = True
    (workdir / "c.yaml").write_text(yaml.safe_dump(config))
    result = _dry_run(workdir, "--configfile", str(workdir / "c.yaml"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "rule import_weights:" in result.stdout


@pytest.mark.long
def test_seeds_run_every_trained_experiment_once_per_seed(tmp_path: Path) -> None:
    """``seeds: [0, 1]``: two runs of the U-Net (different weights, the same test images and
    masks), one of the floor; the tables merge the seeds into one row with its spread and
    interval, the comparison against the floor is seed-aware, and it all reaches the report."""
    import torch

    config = _with(models=["baseline", "telea"], seeds=[0, 1], results_dir="results",
                   train={"per_model": {}})
    result = snakemake(tmp_path, config)
    assert result.returncode == 0, result.stderr[-3000:]
    results = tmp_path / "results"
    assert sorted(p.name for p in (results / "models").iterdir()) == ["baseline.seed0",
                                                                      "baseline.seed1"]
    weights = [torch.load(results / "models" / f"baseline.seed{s}" / "model.pt",
                          weights_only=True)["state_dict"] for s in (0, 1)]
    assert any(not torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    per_image = [pd.read_csv(results / "metrics" / f"baseline.seed{s}" / "per_image.csv",
                             dtype={"id": str}) for s in (0, 1)]
    assert per_image[0]["id"].equals(per_image[1]["id"])
    assert per_image[0]["hole_ratio"].equals(per_image[1]["hole_ratio"])  # the same masks
    benchmark = pd.read_csv(results / "tables" / "benchmark.csv").set_index("method")
    row = benchmark.loc["baseline U-Net (ours)"]
    psnrs = [pd.read_csv(results / "metrics" / f"baseline.seed{s}" / "per_image.csv")["psnr"]
             .mean() for s in (0, 1)]
    # the tables' CSVs keep 6 significant digits (%.6g): 5e-6 relative at most, 2e-4 dB here
    assert row["seeds"] == 2 and row["psnr_db"] == pytest.approx(np.mean(psnrs), rel=5e-6)
    assert row["psnr_ci_low"] < row["psnr_db"] < row["psnr_ci_high"]
    assert pd.isna(benchmark.loc["OpenCV Telea (training-free, measured here)", "seeds"])
    test = pd.read_csv(results / "tables" / "test_metrics.csv")
    assert sorted(test["experiment"]) == ["baseline.seed0", "baseline.seed1", "telea"]
    compared = pd.read_csv(results / "tables" / "comparisons.csv")
    psnr = compared[compared["metric"] == "psnr"].iloc[0]
    assert (psnr["a"], psnr["b"], psnr["seed_pairs"]) == ("baseline U-Net", "OpenCV Telea", 2)
    assert psnr["difference"] == pytest.approx(row["psnr_db"] - benchmark.loc[
        "OpenCV Telea (training-free, measured here)", "psnr_db"], abs=5e-4)  # three roundings
    assert "Holm" in (results / "tables" / "comparisons.md").read_text()
    floor = pd.read_csv(results / "tables" / "floor.csv").iloc[0]
    assert floor["seeds"] == 2 and floor["rule"].startswith("95 % interval over 2 seeds")
    assert (results / "figures" / "comparisons.png").stat().st_size > 1000
    result = snakemake(tmp_path, tmp_path / "config.yaml", "--report", "results/report.html")
    assert result.returncode == 0, result.stderr[-2000:]
    embedded = report_files((results / "report.html").read_text())
    assert "baseline U-Net" in embedded["comparisons.csv"]


def test_the_tables_rule_declares_every_file_the_tables_write(tmp_path: Path) -> None:
    """The tables rule's outputs (each registered with the report) are ndmha.tables.FILES, no
    more and no fewer: a file the writer adds without the rule would be written untracked."""
    from ndmha.tables import FILES

    result = snakemake(tmp_path, TINY, "-n", "-p", "--forceall")
    assert result.returncode == 0, result.stderr[-2000:]
    block = next(b for b in result.stdout.split("\n\n") if re.search(r"^rule tables:", b, re.M))
    declared = {Path(p).name for p in re.search(r"output: (.*)", block)[1].split(", ")}
    assert declared == {name for names in FILES.values() for name in names}
