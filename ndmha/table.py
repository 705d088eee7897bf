"""The benchmark table: the paper's rows, the seed report's rows and our measured rows."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from ndmha.io import atomic_open
from ndmha.models import build_model, count_gmac

log = logging.getLogger("ndmha")

COLUMNS = ["method", "source", "psnr_db", "ssim", "l1", "lpips", "fid", "kid", "params_m",
           "runtime_s", "gmac", "gmac_at_size", "device", "dataset"]
TEST_COLUMNS = ["model", "images", "image_size", "psnr", "ssim", "l1", "lpips", "fid", "kid",
                "kid_std", "parameters", "inference_s_per_image", "device"]
NEEDS_WEIGHTS = ("lpips", "fid", "kid", "kid_std")
GMAC_SIZE = 256  # the paper's GMAC column is for 256 x 256 inputs
DISPLAY_NAMES = {"baseline": "baseline U-Net", "ndmha": "NDMHA"}


def method_name(model: str) -> str:
    return f"{DISPLAY_NAMES.get(model, model)} (ours)"


def _short(value: object) -> object:
    """A metric value, or ``n/a`` for a metric whose weights were missing (the path goes to the
    caveats)."""
    return "n/a" if isinstance(value, str) else value


def caveats(summary: dict) -> list[str]:
    """What a reader must know about one measured row."""
    notes = [f"{k.upper()} {summary[k]}" for k in ("lpips", "fid")  # KID shares FID's weights
             if isinstance(summary[k], str)]
    return [f"{method_name(summary['model'])}: {n}" for n in notes + summary.get("warnings", [])]


def measured_row(summary: dict) -> dict:
    """One table row from a metrics summary written by :func:`ndmha.evaluate.score`."""
    model = build_model(summary["model"])
    return {
        "method": method_name(summary["model"]),
        "source": "measured",
        "psnr_db": summary["psnr"],
        "ssim": summary["ssim"],
        "l1": summary["l1"],
        **{k: _short(summary[k]) for k in ("lpips", "fid", "kid")},
        "params_m": summary["parameters"] / 1e6,
        "runtime_s": summary["inference_s_per_image"],
        "gmac": count_gmac(model, GMAC_SIZE),
        "gmac_at_size": count_gmac(model, summary["image_size"]),
        "device": summary["device"],
        "dataset": f"{summary['dataset']}, {summary['images']} test images, "
                   f"{summary['image_size']}px",
    }


def write_tables(paper_csv: str | Path, seed_report_csv: str | Path,
                 summaries: list[str | Path], out_csv: str | Path, out_md: str | Path,
                 test_csv: str | Path) -> pd.DataFrame:
    """The benchmark table (CSV and Markdown) and the test-metrics table of our models (CSV,
    the seed report's "test metrics"); returns the benchmark table."""
    loaded = [json.loads(Path(p).read_text()) for p in summaries]
    test = pd.DataFrame([{k: _short(s[k]) if k in NEEDS_WEIGHTS else s[k] for k in TEST_COLUMNS}
                         for s in loaded])
    with atomic_open(test_csv, newline="") as fh:
        test.to_csv(fh, index=False, float_format="%.6g")
    return benchmark_table(paper_csv, seed_report_csv, loaded, out_csv, out_md)


def benchmark_table(paper_csv: str | Path, seed_report_csv: str | Path,
                    summaries: list[dict], out_csv: str | Path, out_md: str | Path
                    ) -> pd.DataFrame:
    """Write the benchmark table as CSV and Markdown; returns it."""
    paper = pd.read_csv(paper_csv).assign(source="paper", device="not stated",
                                          dataset="CelebA-HQ + QD-IMD (paper)")
    seed = pd.read_csv(seed_report_csv)
    seed = seed[seed["split"] == "test"].rename(columns={"model": "method", "inference_s": "runtime_s"})
    seed = seed.assign(source="seed report", device="Colab GPU",
                       dataset=[f"CelebA-HQ + QD-IMD, {int(n)} test images" if pd.notna(n)
                                else "CelebA-HQ + QD-IMD" for n in seed["images"]])
    ours = pd.DataFrame([measured_row(summary) for summary in summaries])
    table = pd.concat([paper, seed, ours], ignore_index=True).reindex(columns=COLUMNS)
    with atomic_open(out_csv, newline="") as fh:
        table.to_csv(fh, index=False, float_format="%.6g")
    with atomic_open(out_md) as fh:
        fh.write(to_markdown(table, [c for summary in summaries for c in caveats(summary)]))
    log.info("benchmark table with %d rows written to %s and %s", len(table), out_csv, out_md)
    return table


def to_markdown(table: pd.DataFrame, notes: list[str] = ()) -> str:
    """A GitHub-style Markdown table, blanks for missing values, a note on comparability and the
    caveats of our rows (e.g. a perceptual loss trained with random VGG19 weights)."""
    formats = {"psnr_db": "{:.2f}", "ssim": "{:.4f}", "l1": "{:.4f}", "lpips": "{:.4f}",
               "fid": "{:.2f}", "kid": "{:.4f}", "params_m": "{:.3f}", "runtime_s": "{:.4f}",
               "gmac": "{:.2f}", "gmac_at_size": "{:.2f}"}
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    for _, row in table.iterrows():
        cells = [("" if pd.isna(row[c]) else
                  formats.get(c, "{}").format(row[c]) if not isinstance(row[c], str) else row[c])
                 for c in table.columns]
        lines.append("| " + " | ".join(cells) + " |")
    note = ("\nSSIM as Wang et al. define it (Gaussian 11x11, sigma 1.5, the mean over the valid "
            "region, as scikit-image and tf.image.ssim compute it); PSNR and SSIM on RGB in "
            "[0, 1] (data_range 1), of the composite against the ground truth. "
            "GMAC: one forward pass at 256x256 (gmac_at_size: at the evaluated size). Paper "
            "and seed-report rows are quoted, not measured. Rows measured on the embedded demo "
            "dataset (procedural faces) are a smoke test of the pipeline and are not comparable "
            "with CelebA-HQ numbers.\n")
    return "\n".join(lines) + "\n" + note + "".join(f"\nCaveat: {c}.\n" for c in notes)
