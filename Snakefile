# ndmha: facial image inpainting study (Phutke & Murala, WACV 2023, and the cs512 seed report).
#   snakemake                                          # the embedded demo (config.yaml)
#   snakemake --configfile configs/local/celebahq.yaml   # the full reproduction: your overlay
#                                                        # of configs/paper_celebahq.yaml (README)
import os

from snakemake.utils import min_version

min_version("9.0")


# The workflow's config.yaml (the demo) is the default; a --configfile given on the command line
# replaces it instead of being merged over it, so no demo setting leaks into another study
# unless that file says so: the shipped configs are overlays that name their base (`extends:
# config.yaml`, laid under them by workflow/rules/common.smk). --config key=value merges over
# whichever is in use.
if not workflow.overwrite_configfiles:

    configfile: os.path.join(workflow.basedir, "config.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


# the report opens on the reproduction scorecard once the tables rule has written it
report: str(REPORT_FRONT.resolve()) if REPORT_FRONT.exists() else str(DESCRIPTION)


rule all:
    input:
        rules.tables.output,
        rules.data_figure.output,
        expand(rules.training_curves.output, experiment=TRAINED),
        expand(rules.prediction_grid.output, experiment=EXPERIMENTS),
        rules.comparison_figures.output,
        rules.comparison_forest.output,
    default_target: True
