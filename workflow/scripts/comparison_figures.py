"""Snakemake adapter: the side-by-side grid and the metrics against the hole ratio."""
from ndmha.figures import comparison_figures
from ndmha.workflow import run

sm = snakemake  # noqa: F821 (injected by Snakemake)
run(sm, comparison_figures, manifest=sm.input.manifest, models=list(sm.params.models),
    predictions=list(sm.input.predictions), buckets=list(sm.input.buckets),
    grid_png=sm.output.grid, buckets_png=sm.output.buckets, n_ids=sm.params.n_ids)
