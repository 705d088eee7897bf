"""Snakemake adapter: draw the embedded demo images and masks."""
from ndmha.data.demo import make_demo_dataset
from ndmha.workflow import run

sm = snakemake  # noqa: F821 (injected by Snakemake)
p = sm.params
run(sm, make_demo_dataset, images_dir=sm.output.images, masks_dir=sm.output.masks,
    n_images=p.n, n_masks=p.n, size=p.size, mask_size=p.mask_size, seed=p.seed,
    ratio_range=tuple(p.ratio), threads=sm.threads, layout=p.layout, masks=p.masks,
    n_val=p.n_val)
