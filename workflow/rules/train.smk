# Training: one loop for every trained experiment, resumable from
# results/checkpoints/{experiment}/last.pt. Training-free experiments have no train job.


rule train:
    input:
        unpack(train_input),
    output:
        model=model_file("{experiment}"),
        history=RESULTS / "models" / "{experiment}" / "train_log.csv",
    params:
        # The checkpoint and the TensorBoard events are not outputs, so Snakemake keeps them when
        # the job fails or is killed, and a resumed run continues both.
        checkpoint=lambda wc: RESULTS / "checkpoints" / wc.experiment / "last.pt",
        tensorboard=lambda wc: RESULTS / "tensorboard" / wc.experiment,
        settings=lambda wc: train_settings(wc.experiment),
    wildcard_constraints:
        experiment=one_of(TRAINED),
    threads: STUDY.threads("train")
    resources:
        **rule_resources("train"),
    retries: train_retries()
    log:
        LOGS / "train_{experiment}.log",
    benchmark:
        BENCHMARKS / "train_{experiment}.tsv"
    conda:
        ENV
    script:
        "../scripts/train.py"


rule import_weights:
    """An imported experiment: its weights file (a model.pt, or the authors' checkpoint for
    ndmha_released, read as data, never run) as the model.pt the predict rule reads."""
    input:
        weights=lambda wc: EXPERIMENTS[wc.experiment].weights,
    output:
        model=model_file("{experiment}"),
    params:
        architecture=lambda wc: EXPERIMENTS[wc.experiment].architecture,
        options=lambda wc: EXPERIMENTS[wc.experiment].options,
        image_size=STUDY.data.image_size,
    wildcard_constraints:
        experiment=one_of(IMPORTED),
    threads: STUDY.threads("evaluate")
    resources:
        **rule_resources("evaluate"),
    log:
        LOGS / "import_{experiment}.log",
    benchmark:
        BENCHMARKS / "import_{experiment}.tsv"
    conda:
        ENV
    script:
        "../scripts/import_weights.py"
