"""Snakemake adapter: train one experiment (resumes from its checkpoint; torchrun when gpu > 1)."""
from ndmha.launch import launch_training
from ndmha.workflow import run

sm = snakemake  # noqa: F821 (injected by Snakemake)
run(sm, launch_training, manifest=sm.input.manifest, model_out=sm.output.model,
    log_csv=sm.output.history, checkpoint=sm.params.checkpoint, settings=sm.params.settings,
    gpus=int(sm.resources.get("gpu", 0)), tensorboard_dir=sm.params.tensorboard)
