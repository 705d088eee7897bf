# Test inference and per-image metrics, for every experiment whatever its kind.


rule predict:
    input:
        unpack(predict_input),
        manifest=MANIFEST,
    output:
        directory(RESULTS / "predictions" / "{experiment}"),
    params:
        device=STUDY.device,
        method=lambda wc: method_params(wc.experiment),
    threads: STUDY.threads("evaluate")
    resources:
        **rule_resources("evaluate", gpu_by_kind=True),
    log:
        LOGS / "predict_{experiment}.log",
    benchmark:
        BENCHMARKS / "predict_{experiment}.tsv"
    conda:
        ENV
    script:
        "../scripts/predict.py"


rule metrics:
    input:
        manifest=MANIFEST,
        predictions=rules.predict.output,
    output:
        per_image=RESULTS / "metrics" / "{experiment}" / "per_image.csv",
        buckets=RESULTS / "metrics" / "{experiment}" / "buckets.csv",
        summary=RESULTS / "metrics" / "{experiment}" / "summary.json",
    params:
        metrics=STUDY.metric_arguments,
    threads: STUDY.threads("evaluate")
    resources:
        **rule_resources("evaluate", gpu_by_kind=True),
    log:
        LOGS / "metrics_{experiment}.log",
    benchmark:
        BENCHMARKS / "metrics_{experiment}.tsv"
    conda:
        ENV
    script:
        "../scripts/metrics.py"
