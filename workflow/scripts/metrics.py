"""Snakemake adapter: per-image PSNR / SSIM / L1 / LPIPS, FID / KID, hole-ratio buckets."""
from ndmha.evaluate import score
from ndmha.workflow import run

sm = snakemake  # noqa: F821 (injected by Snakemake)
run(sm, score, manifest=sm.input.manifest, predictions=sm.input.predictions[0],
    per_image_csv=sm.output.per_image, buckets_csv=sm.output.buckets,
    summary_json=sm.output.summary, **sm.params.metrics)
