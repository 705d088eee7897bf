"""Snakemake adapter: corrupt image i with mask i (cv2.bitwise_and), one shard."""
from ndmha.data.prepare import overlay_masks
from ndmha.workflow import run

sm = snakemake  # noqa: F821 (injected by Snakemake)
run(sm, overlay_masks, images_dir=sm.input.images, masks_dir=sm.input.masks,
    out_dir=sm.output.corrupted, pairs_csv=sm.output.pairs, threads=sm.threads)
