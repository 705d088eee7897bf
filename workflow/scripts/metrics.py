"""Snakemake adapter: per-image PSNR / SSIM / L1 and the summary."""
from ndmha.evaluate import score
from ndmha.workflow import run

sm = snakemake  # noqa: F821 (injected by Snakemake)
run(sm, score, manifest=sm.input.manifest, predictions=sm.input.predictions[0],
    per_image_csv=sm.output.per_image, summary_json=sm.output.summary, dataset=sm.params.dataset)
