# Training: one loop for every model, resumable from results/checkpoints/{model}/last.pt.


rule train:
    input:
        MANIFEST,
    output:
        model=RESULTS / "models" / "{model}" / "model.pt",
        history=RESULTS / "models" / "{model}" / "train_log.csv",
    params:
        # The checkpoint is not an output, so Snakemake keeps it when the job fails or is killed.
        checkpoint=lambda wc: RESULTS / "checkpoints" / wc.model / "last.pt",
        settings=lambda wc: train_settings(wc.model),
    threads: config["resources"]["train"]["threads"]
    resources:
        **rule_resources("train"),
    log:
        LOGS / "train_{model}.log",
    conda:
        ENV
    script:
        "../scripts/train.py"
