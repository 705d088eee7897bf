"""The tables: the paper's benchmark with the seed report's rows and ours, the seed report's
"test metrics", every experiment side by side with its budget, the seed report's protocol beside
our runs of it, the training-free floor, the paired comparisons (and by hole-ratio bucket, with the gap's trend), the reproduction
scorecard, the protocol card, and where every measured number came from.

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
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ndmha.io import atomic_open, write_json
from ndmha.tables.benchmark import benchmark_table, seed_report_table
from ndmha.tables.comparisons import (BUCKETS_NOTE, COMPARISONS_NOTE, bucket_table,
                                      bucket_view, comparisons_table, comparisons_view,
                                      recorded_comparisons)
from ndmha.tables.experiments import experiments_table, provenance_table, test_metrics_table
from ndmha.tables.floor import FLOOR_NOTE, floor_table, floor_view
from ndmha.tables.format import to_markdown, wrap, write_csv, write_md
from ndmha.tables.protocol import protocol_card, protocol_rows, protocol_rst
from ndmha.tables.rows import aggregate, label_of
from ndmha.tables.scorecard import (recorded_scorecard, scorecard, scorecard_notes, scorecard_rst,
                                   scorecard_view)

#: under protocol.md
PROTOCOL_NOTE = ("Two runs whose test ids and test masks have the same hashes scored the same "
                 "images with the same holes. Every column, in full precision, is in "
                 "protocol.json.")

__all__ = ["FILES", "Study", "write_tables", "floor_table", "comparisons_table",
           "recorded_comparisons", "comparisons_view", "scorecard", "recorded_scorecard",
           "to_markdown"]

#: every file the tables write, by family, all in one folder (the tables rule declares the same)
FILES: dict[str, tuple[str, ...]] = {
    "benchmark": ("benchmark.csv", "benchmark.md"),
    "test_metrics": ("test_metrics.csv",),
    "experiments": ("experiments.csv", "experiments.md"),
    "seed_report": ("seed_report.csv", "seed_report.md"),
    "provenance": ("provenance.csv",),
    "floor": ("floor.csv", "floor.md"),
    "comparisons": ("comparisons.csv", "comparisons.md"),
    "buckets": ("buckets.csv", "buckets.md"),
    "scorecard": ("scorecard.csv", "scorecard.md", "report_front.rst"),
    "protocol": ("protocol.json", "protocol.md"),
}


@dataclass
class Study:
    """What the tables are made of: the runs' summaries, the reference tables, and what the
    config says of the experiments.

    ``labels``: experiment -> its label in the tables; ``references``: experiment -> the seed
    report's method it reproduces; ``settings``: experiment -> its loss weights; ``runs``: run ->
    its experiment and seed (merges an experiment's seeds into one row with its spread and
    interval; the test metrics and provenance stay per run); ``per_image``: run -> its per-image
    CSV and ``comparisons`` the pairs compared on them; ``description``: the workflow's report
    text, which the report's front page shows after the scorecard."""

    summaries: list[str | Path]
    paper_csv: str | Path
    seed_report_csv: str | Path
    labels: dict[str, str] = field(default_factory=dict)
    references: dict[str, str] = field(default_factory=dict)
    settings: dict[str, dict] = field(default_factory=dict)
    config_sha256: str = ""
    runs: dict[str, dict] | None = None
    per_image: dict[str, str | Path] = field(default_factory=dict)
    comparisons: list[list[str]] = field(default_factory=list)
    description: str | Path | None = None
    smoke_test: bool = False
    manifest: str | Path | None = None  # the split manifest: the protocol card's test set
    protocol: dict = field(default_factory=dict)  # what the config says of it (the card's)


def write_tables(study: Study, out: str | Path, families: tuple[str, ...] = tuple(FILES)
                 ) -> pd.DataFrame:
    """Every table family of ``families`` (default: all), as the files :data:`FILES` names in
    the folder ``out`` (CSV, and Markdown where a reader reads it); returns the benchmark
    table, which is written whatever the families (every other table is read beside it)."""
    unknown = set(families) - set(FILES)
    if unknown:
        raise ValueError(f"no table family {sorted(unknown)}; the families: {list(FILES)}")
    path = {family: [Path(out) / name for name in names] for family, names in FILES.items()}
    loaded = [json.loads(Path(p).read_text()) for p in study.summaries]
    merged = aggregate(loaded, study.runs)
    labels = study.labels
    table = benchmark_table(study.paper_csv, study.seed_report_csv, merged,
                            *path["benchmark"], labels)
    if "test_metrics" in families:
        test_metrics_table(loaded, *path["test_metrics"])
    if "experiments" in families:
        experiments_table(merged, *path["experiments"], labels,
                          study.settings)
    if "seed_report" in families:
        seed_report_table(study.seed_report_csv, merged, *path["seed_report"], study.references,
                          labels)
    if "provenance" in families:
        provenance_table(loaded, *path["provenance"], study.config_sha256)
    if "floor" in families:
        floor, verdict = floor_table(merged, labels)
        write_csv(floor, path["floor"][0])
        write_md(floor_view(floor), path["floor"][1], "\n" + verdict + "\n\n" + FLOOR_NOTE + "\n")
    if "buckets" in families:
        names = {label_of(s, labels): s["experiment"] for s in merged}
        buckets = bucket_table(study.comparisons, study.per_image, merged, study.runs, labels)
        write_csv(buckets, path["buckets"][0])
        write_md(bucket_view(buckets, names), path["buckets"][1], "\n" + BUCKETS_NOTE + "\n")
    card = None
    if "protocol" in families and study.manifest is not None:
        card = protocol_card(study.manifest, loaded, study.protocol)
        write_json(path["protocol"][0], card)
        write_md(pd.DataFrame(protocol_rows(card), columns=["what", "value"]),
                 path["protocol"][1], "\n" + PROTOCOL_NOTE + "\n")
    if "comparisons" in families or "scorecard" in families:
        _write_comparisons(study, merged, path, families, card)
    if card is not None:  # every table's Markdown names the protocol it was measured on
        line = wrap(f"\nProtocol: {card['dataset']} (data.protocol {card['protocol']}), test "
                    f"ids {card['split']['test_ids_sha256'][:12]}…, test masks "
                    f"{card['masks']['test_set_sha256'][:12]}… (protocol.md).\n")
        for family in set(families) - {"protocol"}:
            for md in (p for p in path[family] if p.suffix == ".md"):
                text = md.read_text()
                with atomic_open(md) as fh:
                    fh.write(text + line)
    return table


def _write_comparisons(study: Study, merged: list[dict], path: dict[str, list[Path]],
                       families: tuple[str, ...], protocol: dict | None = None) -> None:
    """The paired comparisons and the scorecard read from them: the comparisons name
    experiments by label (the CSV's a and b), the views and the scorecard by experiment name."""
    names = {label_of(s, study.labels): s["experiment"] for s in merged}
    compared, note = comparisons_table(study.comparisons, study.per_image, merged, study.runs,
                                       study.labels)
    if "comparisons" in families:
        write_csv(compared, path["comparisons"][0])
        write_md(comparisons_view(compared, names), path["comparisons"][1],
                 "\n" + note + "\n\n" + COMPARISONS_NOTE + "\n")
    if "scorecard" in families:
        by_name = compared.assign(a=[names.get(a, a) for a in compared["a"]],
                                  b=[names.get(b, b) for b in compared["b"]])
        card = scorecard(merged, by_name)
        write_csv(card, path["scorecard"][0])
        write_md(scorecard_view(card), path["scorecard"][1], scorecard_notes(card))
        text = Path(study.description).read_text() if study.description is not None else ""
        if protocol is not None:
            text = protocol_rst(protocol) + "\n" + text
        with atomic_open(path["scorecard"][2]) as fh:
            fh.write(scorecard_rst(card, text, study.smoke_test))
