# Test inference and per-image metrics.


rule predict:
    input:
        manifest=MANIFEST,
        model=rules.train.output.model,
    output:
        directory(RESULTS / "predictions" / "{model}"),
    params:
        device=config["train"]["device"],
        deform_backend=DEFORM_BACKEND,
    threads: config["resources"]["evaluate"]["threads"]
    resources:
        **rule_resources("evaluate"),
    log:
        LOGS / "predict_{model}.log",
    conda:
        ENV
    script:
        "../scripts/predict.py"


rule metrics:
    input:
        manifest=MANIFEST,
        predictions=rules.predict.output,
    output:
        per_image=RESULTS / "metrics" / "{model}" / "per_image.csv",
        buckets=RESULTS / "metrics" / "{model}" / "buckets.csv",
        summary=RESULTS / "metrics" / "{model}" / "summary.json",
    params:
        dataset=config["data"]["name"],
        lpips=config["evaluation"]["lpips"],
        fid=config["evaluation"]["fid"],
        device=config["train"]["device"],
    threads: config["resources"]["evaluate"]["threads"]
    resources:
        **rule_resources("evaluate"),
    log:
        LOGS / "metrics_{model}.log",
    conda:
        ENV
    script:
        "../scripts/metrics.py"
