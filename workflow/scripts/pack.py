"""Snakemake adapter: a protocol pack's masks (data.mask_protocol lama-*, mat-*), verifiable."""
from ndmha.data.packs import build
from ndmha.workflow import run

sm = snakemake  # noqa: F821 (injected by Snakemake)
run(sm, build, out=sm.output[0], threads=sm.threads, **sm.params.pack)
