"""Snakemake adapter: the shards' files and pairs where an unsharded run puts them."""
from pathlib import Path

from ndmha.data.sources import gather_shards
from ndmha.workflow import run

sm = snakemake  # noqa: F821 (injected by Snakemake)
run(sm, gather_shards, shard_dirs=[Path(p).parent for p in sm.input.shards],
    sources_csv=sm.input.sources, data_dir=Path(sm.output.pairs).parent,
    pairs_csv=sm.output.pairs)
