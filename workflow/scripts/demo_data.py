"""Snakemake adapter: draw the embedded demo images and masks."""
from ndmha.data.demo import make_demo_dataset
from ndmha.workflow import run

sm = snakemake  # noqa: F821 (injected by Snakemake)
run(sm, make_demo_dataset, images_dir=sm.output.images, masks_dir=sm.output.masks,
    threads=sm.threads, **sm.params.demo)
