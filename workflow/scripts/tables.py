"""Snakemake adapter: the benchmark table (paper, seed report, ours) and the test metrics."""
from ndmha.table import write_tables
from ndmha.workflow import run

sm = snakemake  # noqa: F821 (injected by Snakemake)
run(sm, write_tables, paper_csv=sm.input.paper, seed_report_csv=sm.input.seed_report,
    summaries=list(sm.input.summaries), out_csv=sm.output.csv, out_md=sm.output.md,
    test_csv=sm.output.test)
