"""Snakemake adapter: sample faces, masks and corrupted inputs."""
from ndmha.figures import data_samples
from ndmha.workflow import run

sm = snakemake  # noqa: F821 (injected by Snakemake)
run(sm, data_samples, manifest=sm.input[0], out=sm.output[0])
