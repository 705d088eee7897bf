"""Snakemake adapter: every table (benchmark, test metrics, experiments, seed report, provenance,
floor, comparisons, scorecard) and the report's front page."""
from ndmha.tables import write_tables
from ndmha.workflow import run

sm = snakemake  # noqa: F821 (injected by Snakemake)
run(sm, write_tables, paper_csv=sm.input.paper, seed_report_csv=sm.input.seed_report,
    summaries=list(sm.input.summaries), out_csv=sm.output.csv, out_md=sm.output.md,
    test_csv=sm.output.test, experiments_csv=sm.output.experiments,
    experiments_md=sm.output.experiments_md, seed_csv=sm.output.seed, seed_md=sm.output.seed_md,
    provenance_csv=sm.output.provenance, floor_csv=sm.output.floor,
    floor_md=sm.output.floor_md, labels=dict(sm.params.labels),
    references=dict(sm.params.references), settings=dict(sm.params.settings),
    config_sha256=sm.params.config_sha256, runs=dict(sm.params.runs),
    per_image=dict(zip(sm.params.runs, sm.input.per_image)),
    comparisons=[list(pair) for pair in sm.params.comparisons],
    comparisons_csv=sm.output.comparisons, comparisons_md=sm.output.comparisons_md,
    scorecard_csv=sm.output.scorecard, scorecard_md=sm.output.scorecard_md,
    report_front=sm.output.front, description=sm.input.description,
    smoke_test=sm.params.smoke_test)
