"""Snakemake adapter: one experiment's prediction grid on fixed test ids."""
from ndmha.figures import experiment_grid
from ndmha.workflow import run

sm = snakemake  # noqa: F821 (injected by Snakemake)
run(sm, experiment_grid, manifest=sm.input.manifest, predictions=sm.input.predictions[0],
    out=sm.output[0], label=sm.params.label, n_ids=sm.params.n_ids)
