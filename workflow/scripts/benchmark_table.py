"""Snakemake adapter: the benchmark table (paper, seed report, ours)."""
from ndmha.table import benchmark_table
from ndmha.workflow import run

sm = snakemake  # noqa: F821 (injected by Snakemake)
run(sm, benchmark_table, paper_csv=sm.input.paper, seed_report_csv=sm.input.seed_report,
    summaries=list(sm.input.summaries), out_csv=sm.output.csv, out_md=sm.output.md)
