"""Snakemake adapter: the data plan (which source image and mask make each pair)."""
from ndmha.data.sources import plan_sources
from ndmha.workflow import run

sm = snakemake  # noqa: F821 (injected by Snakemake)
run(sm, plan_sources, sources_csv=sm.output[0], images_dir=sm.input.images,
    masks_dir=sm.params.masks, threads=sm.threads, **sm.params.plan)
