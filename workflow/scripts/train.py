"""Snakemake adapter: train one model (resumes from its checkpoint)."""
from ndmha.train import TrainSettings, train
from ndmha.workflow import run

sm = snakemake  # noqa: F821 (injected by Snakemake)
run(sm, train, manifest=sm.input[0], model_out=sm.output.model, log_csv=sm.output.history,
    checkpoint=sm.params.checkpoint, settings=TrainSettings(**sm.params.settings))
