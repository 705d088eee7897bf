"""Snakemake adapter: draw the embedded demo faces and masks."""
from ndmha.data.demo import make_demo_dataset
from ndmha.workflow import run

sm = snakemake  # noqa: F821 (injected by Snakemake)
run(sm, make_demo_dataset, images_dir=sm.output.images, masks_dir=sm.output.masks,
    n_images=sm.params.n, n_masks=sm.params.n, size=sm.params.size,
    mask_size=sm.params.mask_size, seed=sm.params.seed, ratio_range=tuple(sm.params.ratio),
    threads=sm.threads)
