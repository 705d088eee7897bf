"""Snakemake adapter: every table family (ndmha.tables.FILES) into the tables folder, and the
report's front page."""
from pathlib import Path

from ndmha.tables import Study, write_tables
from ndmha.workflow import run

sm = snakemake  # noqa: F821 (injected by Snakemake)
study = Study(summaries=list(sm.input.summaries), paper_csv=sm.input.paper,
              seed_report_csv=sm.input.seed_report, labels=dict(sm.params.labels),
              references=dict(sm.params.references), settings=dict(sm.params.settings),
              config_sha256=sm.params.config_sha256, runs=dict(sm.params.runs),
              per_image=dict(zip(sm.params.runs, sm.input.per_image)),
              comparisons=[list(pair) for pair in sm.params.comparisons],
              description=sm.input.description, smoke_test=sm.params.smoke_test,
              manifest=sm.input.manifest, protocol=dict(sm.params.protocol))
run(sm, write_tables, study=study, out=Path(sm.output.csv).parent)
