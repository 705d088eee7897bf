"""The scale rehearsal (bench/scale.py) at CI size: N faces at 1024 px and N masks at 512 px
through the whole workflow, every job's time, memory and output recorded."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
JOBS = {"sources", "convert_0", "masks_0", "overlay_0", "gather", "split", "train_baseline", "predict_baseline",
        "metrics_baseline", "tables", "data_figure", "training_curves_baseline",
        "prediction_grid_baseline",
        "comparison_figures", "comparison_forest", "report", "workflow (wall)"}


@pytest.mark.long
def test_scale_rehearsal_at_ci_size(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "scale.py"), "--sizes", "60",
                           "--pool-faces", "6", "--pool-masks", "6", "--max-steps", "2",
                           "--threads", "2", "--workdir", str(tmp_path / "work"), "--out",
                           str(out)], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    table = pd.read_csv(out / "scale.csv")
    assert set(table["job"]) == JOBS and set(table["n"]) == {60}
    assert (table["seconds"] > 0).all()
    jobs = table.set_index("job")
    assert jobs.loc["train_baseline", "peak_rss_mb"] > 100  # a real process was measured
    results = tmp_path / "work" / "n60" / "results"
    assert len(list((results / "data" / "images").glob("*.jpg"))) == 60
    assert len(list((results / "predictions" / "baseline" / "composite").glob("*.png"))) == 6
    # 60 JPGs, 60 masks, 60 corrupted PNGs, each folder's Snakemake timestamp, the pairs CSV
    assert jobs.loc["gather", "files"] == 3 * 61 + 1
    assert (out / "scale.png").stat().st_size > 10_000
    growth = pd.read_csv(out / "scale_growth.csv")
    assert set(growth["job"]) == JOBS
    # the model trained for the capped number of steps only (train.max_steps)
    log = pd.read_csv(results / "models" / "baseline" / "train_log.csv")
    assert list(log["steps"]) == [2]
