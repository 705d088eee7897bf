# The benchmark table: the paper's rows, the seed report's rows and ours.


rule benchmark_table:
    input:
        paper=Path(workflow.basedir) / "workflow" / "resources" / "paper_benchmark.csv",
        seed_report=Path(workflow.basedir) / "workflow" / "resources" / "seed_report_results.csv",
        summaries=expand(RESULTS / "metrics" / "{model}" / "summary.json", model=MODELS),
    output:
        csv=RESULTS / "tables" / "benchmark.csv",
        md=RESULTS / "tables" / "benchmark.md",
    log:
        LOGS / "benchmark_table.log",
    conda:
        ENV
    script:
        "../scripts/benchmark_table.py"
