# ndmha: facial image inpainting study (Phutke & Murala, WACV 2023, and the cs512 seed report).
#   snakemake                                          # the embedded demo (config.yaml)
#   snakemake --configfile configs/celebahq.yaml       # the full CelebA-HQ + QD-IMD reproduction
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        rules.benchmark_table.output,
    default_target: True
