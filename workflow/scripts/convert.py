"""Snakemake adapter: PNG -> JPG conversion."""
from ndmha.data.prepare import convert_images
from ndmha.workflow import run

sm = snakemake  # noqa: F821 (injected by Snakemake)
run(sm, convert_images, src_dir=sm.input[0], out_dir=sm.output[0], n_images=sm.params.n,
    size=sm.params.size, quality=sm.params.quality, threads=sm.threads)
