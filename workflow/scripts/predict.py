"""Snakemake adapter: inpaint the test split (a trained model, or a training-free method)."""
from ndmha.evaluate import predict_experiment
from ndmha.workflow import run

sm = snakemake  # noqa: F821 (injected by Snakemake)
run(sm, predict_experiment, manifest=sm.input.manifest, out_dir=sm.output[0],
    model_path=sm.input.get("model"), device=sm.params.device, **sm.params.method)
