"""Snakemake adapter: an imported experiment's weights as a model.pt (nothing in them is run)."""
from ndmha.foreign_weights import import_weights
from ndmha.workflow import run

sm = snakemake  # noqa: F821 (injected by Snakemake)
run(sm, import_weights, src=sm.input.weights, out=sm.output.model, experiment=sm.wildcards.experiment,
    architecture=sm.params.architecture, options=sm.params.options,
    image_size=sm.params.image_size)
