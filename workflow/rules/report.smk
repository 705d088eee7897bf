# Tables, figures and the HTML report (snakemake --report results/report.html).

FIGURES = RESULTS / "figures"
TABLES = RESULTS / "tables"
GRID_IMAGES = STUDY.evaluation.grid_images
RESOURCES = Path(workflow.basedir) / "workflow" / "resources"
# the report's front page: the scorecard (written by the tables rule) before workflow.rst
DESCRIPTION = Path(workflow.basedir) / "workflow" / "report" / "workflow.rst"
REPORT_FRONT = TABLES / "report_front.rst"
SMOKE_TEST = STUDY.smoke_test


rule tables:
    input:
        paper=RESOURCES / "paper_benchmark.csv",
        seed_report=RESOURCES / "seed_report_results.csv",
        summaries=expand(rules.metrics.output.summary, experiment=EXPERIMENTS),
        per_image=expand(rules.metrics.output.per_image, experiment=EXPERIMENTS),
        description=DESCRIPTION,
        manifest=MANIFEST,
    output:
        scorecard=report(TABLES / "scorecard.csv", caption="../report/scorecard.rst",
                         category="scorecard", labels={"figure": "reproduction scorecard"}),
        scorecard_md=TABLES / "scorecard.md",
        front=REPORT_FRONT,
        csv=report(TABLES / "benchmark.csv", caption="../report/benchmark.rst",
                   category="comparison", labels={"figure": "benchmark table"}),
        md=TABLES / "benchmark.md",
        test=report(TABLES / "test_metrics.csv", caption="../report/test_metrics.rst",
                    category="comparison", labels={"figure": "test metrics"}),
        experiments=report(TABLES / "experiments.csv", caption="../report/experiments.rst",
                           category="experiments", labels={"figure": "experiments table"}),
        experiments_md=TABLES / "experiments.md",
        seed=report(TABLES / "seed_report.csv", caption="../report/seed_report.rst",
                    category="comparison", labels={"figure": "seed report protocol"}),
        seed_md=TABLES / "seed_report.md",
        provenance=report(TABLES / "provenance.csv", caption="../report/provenance.rst",
                          category="provenance", labels={"figure": "provenance"}),
        floor=report(TABLES / "floor.csv", caption="../report/floor.rst",
                     category="experiments", labels={"figure": "the training-free floor"}),
        floor_md=TABLES / "floor.md",
        comparisons=report(TABLES / "comparisons.csv", caption="../report/comparisons.rst",
                           category="experiments", labels={"figure": "paired comparisons"}),
        comparisons_md=TABLES / "comparisons.md",
        buckets=report(TABLES / "buckets.csv", caption="../report/buckets.rst",
                       category="experiments", labels={"figure": "comparisons by hole size"}),
        buckets_md=TABLES / "buckets.md",
        protocol=report(TABLES / "protocol.json", caption="../report/protocol.rst",
                        category="provenance", labels={"figure": "protocol card"}),
        protocol_md=TABLES / "protocol.md",
    params:
        labels=LABELS,
        references={e.group: e.seed_report for e in EXPERIMENTS.values() if e.seed_report},
        settings={e.group: {"loss": e.loss} for e in EXPERIMENTS.values() if e.trained},
        config_sha256=CONFIG_SHA256,
        runs=RUNS,
        comparisons=COMPARISONS,
        smoke_test=SMOKE_TEST,
        protocol=STUDY.protocol_facts,
    threads: STUDY.threads("evaluate")
    resources:
        **rule_resources("evaluate"),
    log:
        LOGS / "tables.log",
    benchmark:
        BENCHMARKS / "tables.tsv"
    conda:
        ENV
    script:
        "../scripts/tables.py"


rule data_figure:
    input:
        MANIFEST,
    output:
        report(FIGURES / "data_samples.png", caption="../report/data_samples.rst",
               category="data", labels={"figure": "masked faces"}),
    threads: STUDY.threads("evaluate")
    resources:
        **rule_resources("evaluate"),
    log:
        LOGS / "data_figure.log",
    benchmark:
        BENCHMARKS / "data_figure.tsv"
    conda:
        ENV
    script:
        "../scripts/data_figure.py"


rule training_curves:
    input:
        rules.train.output.history,
    output:
        report(FIGURES / "{experiment}" / "curves.png", caption="../report/curves.rst",
               category="{experiment}", labels={"figure": "training curves"}),
    wildcard_constraints:
        experiment=one_of(TRAINED),
    params:
        label=lambda wc: EXPERIMENTS[wc.experiment].run_label,
    threads: STUDY.threads("evaluate")
    resources:
        **rule_resources("evaluate"),
    log:
        LOGS / "training_curves_{experiment}.log",
    benchmark:
        BENCHMARKS / "training_curves_{experiment}.tsv"
    conda:
        ENV
    script:
        "../scripts/training_curves.py"


rule prediction_grid:
    input:
        manifest=MANIFEST,
        predictions=rules.predict.output,
    output:
        report(FIGURES / "{experiment}" / "predictions.png",
               caption="../report/predictions.rst", category="{experiment}",
               labels={"figure": "test predictions"}),
    params:
        n_ids=GRID_IMAGES,
        label=lambda wc: EXPERIMENTS[wc.experiment].run_label,
    threads: STUDY.threads("evaluate")
    resources:
        **rule_resources("evaluate"),
    log:
        LOGS / "prediction_grid_{experiment}.log",
    benchmark:
        BENCHMARKS / "prediction_grid_{experiment}.tsv"
    conda:
        ENV
    script:
        "../scripts/prediction_grid.py"


rule comparison_figures:
    input:
        manifest=MANIFEST,
        predictions=expand(rules.predict.output, experiment=REPRESENTATIVE),
        buckets=expand(rules.metrics.output.buckets, experiment=REPRESENTATIVE),
        histories=expand(rules.train.output.history, experiment=TRAINED),
        floors=expand(rules.metrics.output.summary, experiment=TRAINING_FREE),
    output:
        grid=report(FIGURES / "comparison.png", caption="../report/comparison.rst",
                    category="comparison", labels={"figure": "side by side"}),
        buckets=report(FIGURES / "metrics_vs_hole.png", caption="../report/metrics_vs_hole.rst",
                       category="comparison", labels={"figure": "metrics vs hole ratio"}),
        curves=report(FIGURES / "experiments_psnr.png",
                      caption="../report/experiments_psnr.rst", category="experiments",
                      labels={"figure": "PSNR against steps and wall time"}),
    params:
        labels=[LABELS[name] for name in REPRESENTATIVE],
        trained_labels=[LABELS[name] for name in TRAINED],  # the seeds of one share a label
        floor_labels=[LABELS[name] for name in TRAINING_FREE],
        floor_methods=[method_params(name) for name in TRAINING_FREE],
        n_ids=GRID_IMAGES,
        smoke_test=SMOKE_TEST,
    threads: STUDY.threads("evaluate")
    resources:
        **rule_resources("evaluate"),
    log:
        LOGS / "comparison_figures.log",
    benchmark:
        BENCHMARKS / "comparison_figures.tsv"
    conda:
        ENV
    script:
        "../scripts/comparison_figures.py"


rule comparison_forest:
    input:
        rules.tables.output.comparisons,
    output:
        report(FIGURES / "comparisons.png", caption="../report/comparisons_forest.rst",
               category="experiments", labels={"figure": "paired differences"}),
    threads: STUDY.threads("evaluate")
    resources:
        **rule_resources("evaluate"),
    log:
        LOGS / "comparison_forest.log",
    benchmark:
        BENCHMARKS / "comparison_forest.tsv"
    conda:
        ENV
    script:
        "../scripts/comparison_forest.py"
