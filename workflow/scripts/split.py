"""Snakemake adapter: seeded train/val/test split manifest."""
from ndmha.data.split import make_split
from ndmha.workflow import run

sm = snakemake  # noqa: F821 (injected by Snakemake)
run(sm, make_split, pairs_csv=sm.input[0], manifest_csv=sm.output[0], **sm.params.split)
