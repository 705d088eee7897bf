"""The paper's benchmark with the seed report's rows and ours, and the seed report's protocol
beside our runs of it."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from ndmha.tables.floor import rows_note
from ndmha.tables.format import every_column, short, view, with_interval, write_csv, write_md
from ndmha.tables.rows import (BUDGET, SEED_COLUMNS, SSIM_NOTE, budget_cell, budget_of, caveats,
                               commit, gmacs, kind_of, label_of, method_name, names_note,
                               seed_columns)

log = logging.getLogger("ndmha")

COLUMNS = ["method", "source", "kind", "psnr_db", "ssim", "l1", "lpips", "fid", "fid_clean", "kid",
           *SEED_COLUMNS, "params_m", "runtime_s", "gmac", "gmac_without_deformable", "gmac_at_size", *BUDGET,
           "device", "dataset", "git_commit"]
#: budgets the references state (the seed report: "200 epochs with a batch size of 1", "3 days",
#: 27,000 training images; its reduced NDMHA: 750 images, 12 epochs)
QUOTED_BUDGETS = {
    "NDMHA (paper)": {"epochs": 200, "steps": 5_400_000, "images_seen": 5_400_000, "batch": 1,
                      "train_time_s": 3 * 86400, "train_device": "not stated"},
    "NDMHA (seed report reduced)": {"epochs": 12, "images_seen": 9000,
                                    "train_device": "Colab GPU"},
}
def measured_row(summary: dict, labels: dict[str, str] | None = None) -> dict:
    """One benchmark row from a metrics summary written by :func:`ndmha.evaluate.score`."""
    return {
        "method": method_name(summary, labels),
        "source": "measured",
        "kind": kind_of(summary),
        "psnr_db": summary["psnr"],
        "ssim": summary["ssim"],
        "l1": summary["l1"],
        **{k: short(summary[k]) for k in ("lpips", "fid", "kid")},
        "fid_clean": short(summary.get("fid_clean")),
        **seed_columns(summary),
        "params_m": summary["parameters"] / 1e6,
        "runtime_s": summary["inference_s_per_image"],
        **gmacs(summary, summary["image_size"]),
        **budget_of(summary),
        "device": summary["device"],
        "dataset": f"{summary['dataset']}, {summary['images']} test images, "
                   f"{summary['image_size']}px",
        "git_commit": commit(summary),
    }


def benchmark_table(paper_csv: str | Path, seed_report_csv: str | Path,
                    summaries: list[dict], out_csv: str | Path, out_md: str | Path,
                    labels: dict[str, str] | None = None) -> pd.DataFrame:
    """Write the benchmark table as CSV and Markdown; returns it."""
    paper = pd.read_csv(paper_csv).assign(source="paper", device="not stated",
                                          dataset="CelebA-HQ + QD-IMD (paper)")
    seed = pd.read_csv(seed_report_csv)
    seed = seed[seed["split"] == "test"].rename(columns={"model": "method", "inference_s": "runtime_s"})
    seed = seed.assign(source="seed report", device="Colab GPU",
                       dataset=[f"CelebA-HQ + QD-IMD, {int(n)} test images" if pd.notna(n)
                                else "CelebA-HQ + QD-IMD" for n in seed["images"]])
    quoted = pd.concat([paper, seed.drop(columns=["epochs"])], ignore_index=True)
    for column in BUDGET:
        quoted[column] = None
    for method, budget in QUOTED_BUDGETS.items():
        for column, value in budget.items():
            quoted.loc[quoted["method"] == method, column] = value
    ours = pd.DataFrame([measured_row(summary, labels) for summary in summaries])
    table = pd.concat([quoted, ours], ignore_index=True).reindex(columns=COLUMNS)
    write_csv(table, out_csv)
    measured_on = sorted({str(summary.get("dataset", "")) for summary in summaries} - {""})
    protocol = (f"Protocols: the measured rows on {', '.join(measured_on) or 'no dataset named'}; "
                "the quoted rows (paper, seed report) on CelebA-HQ + QD-IMD. ")
    note = (protocol + SSIM_NOTE + " GMAC: one forward pass at 256x256, deformable convs counted as "
            "convs of the same shape; gmac_without_deformable leaves them out, as tools without "
            "a formula for the deformable op count (the likely reading of the paper's column); "
            "gmac_at_size: at the evaluated size. Budget: epochs, optimizer steps, images seen, "
            "global batch, training wall time and device; the paper's and the seed report's are "
            "quoted where they state them. Paper and seed-report rows are quoted, not measured. "
            "Rows measured on the embedded demo dataset (procedural faces) are a smoke test of "
            "the pipeline and are not comparable with CelebA-HQ numbers. Training-free rows "
            "(kind training-free) learn nothing: the floor a trained row must clear; they have "
            "no budget, parameters or GMAC.\n\n"
            + rows_note(summaries, labels) + "\n")
    names = [*quoted["method"], *(s["experiment"] for s in summaries)]
    write_md(benchmark_view(table.assign(method=names)), out_md,
             "\n" + every_column("benchmark.csv (KID, the seed spreads, L1, runtime, GMAC, "
                                 "the full budget, device, dataset and commit)")
             + names_note(summaries, labels) + "\n" + note,
             [c for summary in summaries for c in caveats(summary, labels)])
    log.info("benchmark table with %d rows written to %s and %s", len(table), out_csv, out_md)
    return table


def seed_report_table(seed_report_csv: str | Path, summaries: list[dict], out_csv: str | Path,
                      out_md: str | Path | None, references: dict[str, str],
                      labels: dict[str, str] | None = None) -> pd.DataFrame:
    """The seed report's numbers beside our runs of its protocol: for each experiment that names
    a seed-report method (``experiments.<name>.seed_report``), its test metrics (loss, L1, PSNR,
    SSIM, inference time) and budget, the seed's value and ours side by side."""
    seed = pd.read_csv(seed_report_csv)
    rows = []
    for s in summaries:
        method = references.get(s["experiment"])
        if method is None:
            continue
        theirs = seed[seed["model"] == method]
        quoted = theirs[theirs["split"] == "test"].iloc[0] if len(theirs) else None
        budget = budget_of(s)
        ours = {"loss": s.get("test_loss"), "l1": s["l1"], "psnr_db": s["psnr"],
                "ssim": s["ssim"], "inference_s": s["inference_s_per_image"],
                "images": s["images"], "epochs": budget["epochs"],
                "train_images": s.get("budget", {}).get("train_images")}
        seed_train = theirs[theirs["split"] == "train"]
        quoted_values = {"loss": None, "l1": None, "psnr_db": None, "ssim": None,
                         "inference_s": None, "images": None, "epochs": None,
                         "train_images": (int(seed_train["images"].iloc[0])
                                          if len(seed_train) and pd.notna(
                                              seed_train["images"].iloc[0]) else None)}
        if quoted is not None:
            for key in quoted_values:
                if key in quoted and pd.notna(quoted[key]):
                    quoted_values[key] = quoted[key]
        for key, value in ours.items():
            rows.append({"experiment": s["experiment"], "label": label_of(s, labels),
                         "seed_report_method": method, "quantity": key,
                         "seed_report": quoted_values.get(key), "ours": value})
    table = pd.DataFrame(rows, columns=["experiment", "label", "seed_report_method", "quantity",
                                        "seed_report", "ours"])
    write_csv(table, out_csv)
    note = ("\nThe seed report's protocol (its 60/20/20 split, the baseline retrained on train + "
            "val, the reduced NDMHA on 750 images for 12 epochs) run by this workflow. Its "
            "'loss' is its own Keras objective (not stated), ours the experiment's objective on "
            "the test split: not comparable. " + SSIM_NOTE + " Ours on the data of this run "
            "(see the dataset of the benchmark table): on the embedded demo a smoke test, not "
            "a reproduction.\n")
    if table.empty:
        note = "\nNo experiment names a seed-report method (experiments.<name>.seed_report).\n"
    write_md(view(table, {"experiment": "experiment", "seed report's method": "seed_report_method",
                          "quantity": "quantity", "seed report": "seed_report", "ours": "ours"}),
             out_md, note)
    return table


#: the kinds of measured row as benchmark.md names their source
SOURCES = {"trained": "ours", "training-free": "training-free", "imported": "imported",
           "external": "external"}


def benchmark_view(table: pd.DataFrame) -> pd.DataFrame:
    """benchmark.md: method, source, PSNR and SSIM with their intervals over seeds, LPIPS, FID,
    parameters and budget."""
    return view(table, {
        "method": "method",
        "source": lambda r: SOURCES.get(r["kind"], r["source"]) if r["source"] == "measured"
        else r["source"],
        "PSNR (dB)": lambda r: with_interval(r["psnr_db"], r.get("psnr_ci_low"),
                                             r.get("psnr_ci_high"), 2),
        "SSIM": lambda r: with_interval(r["ssim"], r.get("ssim_ci_low"), r.get("ssim_ci_high"),
                                        4),
        "LPIPS": "lpips", "FID": "fid", "FID clean": "fid_clean", "params (M)": "params_m",
        "steps × batch": budget_cell})
