"""The tables: the paper's benchmark with the seed report's rows and ours, the seed report's
"test metrics", every experiment side by side with its budget, the seed report's protocol beside
our runs of it, the training-free floor, the paired comparisons, the reproduction scorecard, and
where every measured number came from.

Every measured row carries its budget (epochs, optimizer steps, images seen, batch size, training
wall time and device) and its provenance (code commit, settings and data hashes, software). The
CSVs keep every column; each Markdown view keeps a reader's few within
:data:`~ndmha.tables.format.MAX_WIDTH` characters and names its CSV.

One module a table: :mod:`.benchmark` (with the seed report's protocol), :mod:`.experiments`
(with the test metrics and provenance), :mod:`.floor`, :mod:`.comparisons`, :mod:`.scorecard`;
:mod:`.rows` says what every table says of a measured row, :mod:`.format` writes them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ndmha.io import atomic_open
from ndmha.tables.benchmark import benchmark_table, seed_report_table
from ndmha.tables.comparisons import (COMPARISONS_NOTE, comparisons_table, comparisons_view,
                                      recorded_comparisons)
from ndmha.tables.experiments import experiments_table, provenance_table, test_metrics_table
from ndmha.tables.floor import FLOOR_NOTE, floor_table, floor_view
from ndmha.tables.format import to_markdown, write_csv, write_md
from ndmha.tables.rows import aggregate, label_of
from ndmha.tables.scorecard import scorecard, scorecard_notes, scorecard_rst, scorecard_view

__all__ = ["write_tables", "floor_table", "comparisons_table", "recorded_comparisons",
           "comparisons_view", "scorecard", "to_markdown"]


def write_tables(paper_csv: str | Path, seed_report_csv: str | Path,
                 summaries: list[str | Path], out_csv: str | Path, out_md: str | Path,
                 test_csv: str | Path, experiments_csv: str | Path | None = None,
                 experiments_md: str | Path | None = None, seed_csv: str | Path | None = None,
                 seed_md: str | Path | None = None, provenance_csv: str | Path | None = None,
                 floor_csv: str | Path | None = None, floor_md: str | Path | None = None,
                 labels: dict[str, str] | None = None,
                 references: dict[str, str] | None = None,
                 settings: dict[str, dict] | None = None,
                 config_sha256: str = "", runs: dict[str, dict] | None = None,
                 per_image: dict[str, str | Path] | None = None,
                 comparisons: list[list[str]] | None = None,
                 comparisons_csv: str | Path | None = None,
                 comparisons_md: str | Path | None = None,
                 scorecard_csv: str | Path | None = None,
                 scorecard_md: str | Path | None = None,
                 report_front: str | Path | None = None,
                 description: str | Path | None = None,
                 smoke_test: bool = False) -> pd.DataFrame:
    """Every table (CSV, and Markdown where a reader reads it): the benchmark, the seed report's
    test metrics for our experiments, the experiments with their budgets, the seed report's
    protocol beside ours (``references``: experiment -> the seed report's method), the
    provenance of every row, the floor, the paired comparisons and the scorecard; returns the
    benchmark table. ``runs`` (run -> its experiment and seed) merges an experiment's seeds into
    one row with its spread and interval (the test metrics and provenance stay per run);
    ``comparisons`` with ``per_image`` (run -> per-image CSV) writes the paired comparisons.
    ``report_front``: the report's front page, the scorecard before ``description`` (the
    workflow's report text, a file)."""
    loaded = [json.loads(Path(p).read_text()) for p in summaries]
    merged = aggregate(loaded, runs)
    test_metrics_table(loaded, test_csv)
    table = benchmark_table(paper_csv, seed_report_csv, merged, out_csv, out_md, labels)
    if experiments_csv is not None:
        experiments_table(merged, experiments_csv, experiments_md, labels, settings)
    if seed_csv is not None:
        seed_report_table(seed_report_csv, merged, seed_csv, seed_md, references or {}, labels)
    if provenance_csv is not None:
        provenance_table(loaded, provenance_csv, config_sha256)
    if floor_csv is not None:
        floor, verdict = floor_table(merged, labels)
        write_csv(floor, floor_csv)
        write_md(floor_view(floor), floor_md, "\n" + verdict + "\n\n" + FLOOR_NOTE + "\n")
    if comparisons_csv is None and scorecard_csv is None:
        return table
    # the comparisons name experiments by label (the CSV's a and b); the views and the scorecard
    # by experiment name
    names = {label_of(s, labels): s["experiment"] for s in merged}
    compared, note = comparisons_table(comparisons or [], per_image or {}, merged, runs, labels)
    if comparisons_csv is not None:
        write_csv(compared, comparisons_csv)
        write_md(comparisons_view(compared, names), comparisons_md,
                 "\n" + note + "\n\n" + COMPARISONS_NOTE + "\n")
    if scorecard_csv is not None:
        by_name = compared.assign(a=[names.get(a, a) for a in compared["a"]],
                                  b=[names.get(b, b) for b in compared["b"]])
        card = scorecard(merged, by_name)
        write_csv(card, scorecard_csv)
        write_md(scorecard_view(card), scorecard_md, scorecard_notes(card))
        if report_front is not None:
            text = Path(description).read_text() if description is not None else ""
            with atomic_open(report_front) as fh:
                fh.write(scorecard_rst(card, text, smoke_test))
    return table
