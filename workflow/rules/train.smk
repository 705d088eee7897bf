# Training: one loop for every trained experiment, resumable from
# results/checkpoints/{experiment}/last.pt. Training-free experiments have no train job.


rule train:
    input:
        MANIFEST,
    output:
        model=RESULTS / "models" / "{experiment}" / "model.pt",
        history=RESULTS / "models" / "{experiment}" / "train_log.csv",
    params:
        # The checkpoint and the TensorBoard events are not outputs, so Snakemake keeps them when
        # the job fails or is killed, and a resumed run continues both.
        checkpoint=lambda wc: RESULTS / "checkpoints" / wc.experiment / "last.pt",
        tensorboard=lambda wc: RESULTS / "tensorboard" / wc.experiment,
        settings=lambda wc: train_settings(wc.experiment),
    wildcard_constraints:
        experiment=one_of(TRAINED),
    threads: config["resources"]["train"]["threads"]
    resources:
        **rule_resources("train"),
    log:
        LOGS / "train_{experiment}.log",
    benchmark:
        BENCHMARKS / "train_{experiment}.tsv"
    conda:
        ENV
    script:
        "../scripts/train.py"
