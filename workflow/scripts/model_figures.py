"""Snakemake adapter: one experiment's training curves and prediction grid."""
from ndmha.figures import model_figures
from ndmha.workflow import run

sm = snakemake  # noqa: F821 (injected by Snakemake)
run(sm, model_figures, history_csv=sm.input.history, manifest=sm.input.manifest,
    predictions=sm.input.predictions[0], curves_png=sm.output.curves, grid_png=sm.output.grid,
    label=sm.params.label, n_ids=sm.params.n_ids)
