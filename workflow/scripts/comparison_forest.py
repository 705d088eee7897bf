"""Snakemake adapter: the paired differences with their intervals (a forest plot)."""
from ndmha.figures import comparison_forest
from ndmha.workflow import run

sm = snakemake  # noqa: F821 (injected by Snakemake)
run(sm, comparison_forest, comparisons_csv=sm.input[0], out=sm.output[0])
