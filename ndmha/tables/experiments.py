"""Every experiment side by side (architecture, options, loss weights, metrics, cost and budget),
the seed report's "test metrics" of every run, and where every measured number came from."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ndmha.tables.floor import rows_note
from ndmha.tables.format import (compact, every_column, short, view, with_interval, write_csv,
                                 write_md)
from ndmha.tables.rows import (BUDGET, NOT_TRAINED_HERE, SEED_COLUMNS, SSIM_NOTE, budget_cell,
                               budget_of, caveats, gmacs, is_trained, kind_of, label_of, names_note,
                               seed_columns)

TEST_COLUMNS = ["experiment", "images", "image_size", "loss", "l1", "psnr", "ssim", "lpips",
                "fid", "fid_clean", "kid", "kid_std", "parameters", "inference_s_per_image", "device", *BUDGET]
EXPERIMENT_COLUMNS = ["experiment", "label", "kind", "architecture", "options", "loss_weights",
                      "psnr", "ssim", "l1", "lpips", "fid", "fid_clean", "kid", *SEED_COLUMNS,
                      "params_m",
                      "gmac",
                      "gmac_without_deformable", *BUDGET, "test_images"]
PROVENANCE_COLUMNS = ["experiment", "git_commit", "git_dirty", "config_sha256",
                      "train_settings_sha256", "python", "torch", "torchvision", "cuda", "cudnn",
                      "train_device", "eval_device", "dataset", "dataset_images",
                      "manifest_sha256", "train_seconds", "eval_seconds"]
NEEDS_WEIGHTS = ("lpips", "fid", "fid_clean", "kid", "kid_std")
def experiments_table(summaries: list[dict], out_csv: str | Path, out_md: str | Path | None,
                      labels: dict[str, str] | None = None,
                      settings: dict[str, dict] | None = None) -> pd.DataFrame:
    """Every experiment: its architecture and options, loss weights, test metrics, size, cost
    and budget, one row each."""
    rows = []
    for s in summaries:
        counts = gmacs(s, s["image_size"])
        loss = (settings or {}).get(s["experiment"], {}).get("loss", {})
        rows.append({"experiment": s["experiment"], "label": label_of(s, labels),
                     "kind": kind_of(s), "architecture": s["architecture"],
                     "options": compact(s.get("options", {})),
                     "loss_weights": (compact(loss) if is_trained(s)
                                      else NOT_TRAINED_HERE[kind_of(s)]),
                     "psnr": s["psnr"], "ssim": s["ssim"], "l1": s["l1"],
                     **{k: short(s[k]) for k in ("lpips", "fid", "kid")},
                     "fid_clean": short(s.get("fid_clean")),
                     **seed_columns(s), "params_m": s["parameters"] / 1e6, "gmac": counts["gmac"],
                     "gmac_without_deformable": counts["gmac_without_deformable"],
                     **budget_of(s), "test_images": s["images"]})
    table = pd.DataFrame(rows, columns=EXPERIMENT_COLUMNS)
    write_csv(table, out_csv)
    write_md(experiments_view(table), out_md,
             "\n" + every_column("experiments.csv (the label, architecture, options, loss "
                                 "weights, L1, FID, KID, the seed spreads, parameters and the "
                                 "full budget)") + names_note(summaries, labels) + "\n\n"
             + SSIM_NOTE + "\n\n" + rows_note(summaries, labels) + "\n",
             [c for s in summaries for c in caveats(s, labels)])
    return table


def provenance_table(summaries: list[dict], out_csv: str | Path,
                     config_sha256: str = "") -> pd.DataFrame:
    """Where every measured row came from: code, config and settings hashes, software, devices,
    data, wall times."""
    rows = []
    for s in summaries:
        training = s.get("provenance", {}).get("training", {})
        evaluation = s.get("provenance", {}).get("evaluation", {})
        rows.append({"experiment": s["experiment"], "git_commit": training.get("git_commit"),
                     "git_dirty": training.get("git_dirty"), "config_sha256": config_sha256,
                     "train_settings_sha256": training.get("settings_sha256"),
                     **{k: training.get(k) for k in ("python", "torch", "torchvision", "cuda",
                                                     "cudnn")},
                     "train_device": training.get("device"),
                     "eval_device": evaluation.get("device"),
                     "dataset": evaluation.get("dataset"),
                     "dataset_images": training.get("images"),
                     "manifest_sha256": training.get("manifest_sha256"),
                     "train_seconds": s.get("budget", {}).get("train_seconds"),
                     "eval_seconds": evaluation.get("wall_seconds")})
    table = pd.DataFrame(rows, columns=PROVENANCE_COLUMNS)
    write_csv(table, out_csv)
    return table


def experiments_view(table: pd.DataFrame) -> pd.DataFrame:
    """experiments.md: each experiment's kind, PSNR and SSIM with their intervals over seeds,
    LPIPS, GMAC and budget with its wall time."""
    return view(table, {
        "experiment": "experiment", "kind": "kind",
        "PSNR (dB)": lambda r: with_interval(r["psnr"], r.get("psnr_ci_low"),
                                             r.get("psnr_ci_high"), 2),
        "SSIM": lambda r: with_interval(r["ssim"], r.get("ssim_ci_low"), r.get("ssim_ci_high"),
                                        4),
        "LPIPS": "lpips", "GMAC": "gmac", "steps × batch": budget_cell,
        "train (s)": "train_time_s"})


def test_metrics_table(summaries: list[dict], out_csv: str | Path) -> pd.DataFrame:
    """The seed report's "test metrics" of every run (one row a run, seeds apart)."""
    table = pd.DataFrame([{**{k: short(s.get(k)) if k in NEEDS_WEIGHTS else s.get(k)
                              for k in TEST_COLUMNS if k not in BUDGET},
                           "loss": s.get("test_loss"), **budget_of(s)} for s in summaries],
                         columns=TEST_COLUMNS)
    write_csv(table, out_csv)
    return table
