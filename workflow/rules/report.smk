# Tables, figures and the HTML report (snakemake --report results/report.html).

FIGURES = RESULTS / "figures"
TABLES = RESULTS / "tables"
GRID_IMAGES = config["evaluation"]["grid_images"]


rule tables:
    input:
        paper=Path(workflow.basedir) / "workflow" / "resources" / "paper_benchmark.csv",
        seed_report=Path(workflow.basedir) / "workflow" / "resources" / "seed_report_results.csv",
        summaries=expand(rules.metrics.output.summary, model=MODELS),
    output:
        csv=report(TABLES / "benchmark.csv", caption="../report/benchmark.rst",
                   category="comparison", labels={"figure": "benchmark table"}),
        md=TABLES / "benchmark.md",
        test=report(TABLES / "test_metrics.csv", caption="../report/test_metrics.rst",
                    category="comparison", labels={"figure": "test metrics"}),
    threads: config["resources"]["evaluate"]["threads"]
    resources:
        **rule_resources("evaluate"),
    log:
        LOGS / "tables.log",
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
    threads: config["resources"]["evaluate"]["threads"]
    resources:
        **rule_resources("evaluate"),
    log:
        LOGS / "data_figure.log",
    conda:
        ENV
    script:
        "../scripts/data_figure.py"


rule model_figures:
    input:
        history=rules.train.output.history,
        manifest=MANIFEST,
        predictions=rules.predict.output,
    output:
        curves=report(FIGURES / "{model}" / "curves.png", caption="../report/curves.rst",
                      category="{model}", labels={"figure": "training curves"}),
        grid=report(FIGURES / "{model}" / "predictions.png", caption="../report/predictions.rst",
                    category="{model}", labels={"figure": "test predictions"}),
    params:
        n_ids=GRID_IMAGES,
    threads: config["resources"]["evaluate"]["threads"]
    resources:
        **rule_resources("evaluate"),
    log:
        LOGS / "model_figures_{model}.log",
    conda:
        ENV
    script:
        "../scripts/model_figures.py"


rule comparison_figures:
    input:
        manifest=MANIFEST,
        predictions=expand(rules.predict.output, model=MODELS),
        buckets=expand(rules.metrics.output.buckets, model=MODELS),
    output:
        grid=report(FIGURES / "comparison.png", caption="../report/comparison.rst",
                    category="comparison", labels={"figure": "side by side"}),
        buckets=report(FIGURES / "metrics_vs_hole.png", caption="../report/metrics_vs_hole.rst",
                       category="comparison", labels={"figure": "metrics vs hole ratio"}),
    params:
        models=MODELS,
        n_ids=GRID_IMAGES,
    threads: config["resources"]["evaluate"]["threads"]
    resources:
        **rule_resources("evaluate"),
    log:
        LOGS / "comparison_figures.log",
    conda:
        ENV
    script:
        "../scripts/comparison_figures.py"
