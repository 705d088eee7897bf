# Test inference and per-image metrics.


rule predict:
    input:
        manifest=MANIFEST,
        model=rules.train.output.model,
    output:
        directory(RESULTS / "predictions" / "{experiment}"),
    params:
        device=config["train"]["device"],
        deform_backend=DEFORM_BACKEND,
    threads: config["resources"]["evaluate"]["threads"]
    resources:
        **rule_resources("evaluate"),
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
        dataset=config["data"]["name"],
        lpips=config["evaluation"]["lpips"],
        fid=config["evaluation"]["fid"],
        device=config["train"]["device"],
    threads: config["resources"]["evaluate"]["threads"]
    resources:
        **rule_resources("evaluate"),
    log:
        LOGS / "metrics_{experiment}.log",
    benchmark:
        BENCHMARKS / "metrics_{experiment}.tsv"
    conda:
        ENV
    script:
        "../scripts/metrics.py"
