"""Snakemake adapter: the data plan (which source image and mask make each pair)."""
from ndmha.data.sources import plan_sources
from ndmha.workflow import run

sm = snakemake  # noqa: F821 (injected by Snakemake)
p = sm.params
run(sm, plan_sources, sources_csv=sm.output[0], source=p.source, n_images=p.n,
    images_dir=sm.input.images, masks_dir=sm.input.masks, mask_protocol=p.protocol,
    mask_hole=p.hole, mask_count=p.mask_count, mask_binary=p.binary, border_margin=p.margin,
    places2=p.places2, test=p.test, threads=sm.threads, layout=p.layout)
