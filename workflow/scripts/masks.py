"""Snakemake adapter: binarize, resize and re-polarise the masks of one shard of the plan."""
from ndmha.data.sources import masks_shard
from ndmha.workflow import run

sm = snakemake  # noqa: F821 (injected by Snakemake)
run(sm, masks_shard, sources_csv=sm.input[0], out_dir=sm.output[0],
    shard=int(sm.wildcards.shard), shards=sm.params.shards, threads=sm.threads,
    **sm.params.masks)
