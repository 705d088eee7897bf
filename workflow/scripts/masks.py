"""Snakemake adapter: binarize, resize and re-polarise the first N masks."""
from ndmha.data.prepare import prepare_masks
from ndmha.workflow import run

sm = snakemake  # noqa: F821 (injected by Snakemake)
run(sm, prepare_masks, src_dir=sm.input[0], out_dir=sm.output[0], n_masks=sm.params.n,
    size=sm.params.size, hole=sm.params.hole, threads=sm.threads)
