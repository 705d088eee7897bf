"""Snakemake adapter: the side-by-side grid, the metrics against the hole ratio, and every
trained experiment's PSNR against steps and wall time beside the training-free floor."""
from ndmha.figures import comparison_figures
from ndmha.workflow import run

sm = snakemake  # noqa: F821 (injected by Snakemake)
run(sm, comparison_figures, manifest=sm.input.manifest, labels=list(sm.params.labels),
    predictions=list(sm.input.predictions), buckets=list(sm.input.buckets),
    histories=list(sm.input.histories), grid_png=sm.output.grid, buckets_png=sm.output.buckets,
    curves_png=sm.output.curves, n_ids=sm.params.n_ids,
    trained_labels=list(sm.params.trained_labels), floors=list(sm.input.floors),
    floor_labels=list(sm.params.floor_labels), floor_methods=list(sm.params.floor_methods),
    smoke_test=sm.params.smoke_test)
