"""Snakemake adapter: one trained experiment's training curves."""
from ndmha.figures import training_curves
from ndmha.workflow import run

sm = snakemake  # noqa: F821 (injected by Snakemake)
run(sm, training_curves, history_csv=sm.input[0], out=sm.output[0], label=sm.params.label)
