"""Snakemake adapter: inpaint the test split."""
from ndmha.evaluate import predict
from ndmha.workflow import run

sm = snakemake  # noqa: F821 (injected by Snakemake)
run(sm, predict, manifest=sm.input.manifest, model_path=sm.input.model, out_dir=sm.output[0],
    device=sm.params.device, deform_backend=sm.params.deform_backend)
