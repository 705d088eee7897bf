# Data preparation: (demo data) -> the plan -> per shard: PNG->JPG, masks, overlay -> gather ->
# split manifest. data.shards splits the three middle stages into that many jobs each.


if STUDY.data.source == "demo":

    rule demo_data:
        output:
            images=directory(SOURCE_IMAGES),
            masks=directory(DATA_MASKS),
        params:
            demo=STUDY.demo_arguments,
        threads: STUDY.threads("prepare")
        resources:
            **rule_resources("prepare"),
        log:
            LOGS / "demo_data.log",
        benchmark:
            BENCHMARKS / "demo_data.tsv"
        conda:
            ENV
        script:
            "../scripts/demo_data.py"


if STUDY.pack:

    rule pack:
        output:
            directory(PACK),
        params:
            pack=STUDY.pack_arguments,
        threads: STUDY.threads("prepare")
        resources:
            **rule_resources("prepare"),
        log:
            LOGS / "pack.log",
        benchmark:
            BENCHMARKS / "pack.tsv"
        conda:
            ENV
        script:
            "../scripts/pack.py"


rule sources:
    input:
        images=SOURCE_IMAGES,
        masks=PACK if STUDY.pack else SOURCE_MASKS,
    output:
        SOURCES,
    params:
        masks=SOURCE_MASKS,  # a pack's: the masks/ of its folder
        plan=STUDY.plan_arguments,
    threads: STUDY.threads("prepare")
    resources:
        **rule_resources("prepare"),
    log:
        LOGS / "sources.log",
    benchmark:
        BENCHMARKS / "sources.tsv"
    conda:
        ENV
    script:
        "../scripts/sources.py"


rule convert:
    input:
        SOURCES,
    output:
        temp(directory(SHARD / "images")),
    params:
        shards=SHARDS,
        convert=STUDY.convert_arguments,
    threads: STUDY.threads("prepare")
    resources:
        **rule_resources("prepare"),
    log:
        LOGS / "convert_{shard}.log",
    benchmark:
        BENCHMARKS / "convert_{shard}.tsv"
    conda:
        ENV
    script:
        "../scripts/convert.py"


rule masks:
    input:
        SOURCES,
    output:
        temp(directory(SHARD / "masks")),
    params:
        shards=SHARDS,
        masks=STUDY.mask_arguments,
    threads: STUDY.threads("prepare")
    resources:
        **rule_resources("prepare"),
    log:
        LOGS / "masks_{shard}.log",
    benchmark:
        BENCHMARKS / "masks_{shard}.tsv"
    conda:
        ENV
    script:
        "../scripts/masks.py"


rule overlay:
    input:
        images=SHARD / "images",
        masks=SHARD / "masks",
    output:
        corrupted=temp(directory(SHARD / "corrupted")),
        pairs=temp(SHARD / "pairs.csv"),
    threads: STUDY.threads("prepare")
    resources:
        **rule_resources("prepare"),
    log:
        LOGS / "overlay_{shard}.log",
    benchmark:
        BENCHMARKS / "overlay_{shard}.tsv"
    conda:
        ENV
    script:
        "../scripts/overlay.py"


rule gather:
    input:
        sources=SOURCES,
        shards=expand(SHARD / "pairs.csv", shard=range(SHARDS)),
        images=expand(SHARD / "images", shard=range(SHARDS)),
        masks=expand(SHARD / "masks", shard=range(SHARDS)),
        corrupted=expand(SHARD / "corrupted", shard=range(SHARDS)),
    output:
        images=directory(IMAGES),
        masks=directory(MASKS),
        corrupted=directory(CORRUPTED),
        pairs=PAIRS,
    threads: STUDY.threads("prepare")
    resources:
        **rule_resources("prepare"),
    log:
        LOGS / "gather.log",
    benchmark:
        BENCHMARKS / "gather.tsv"
    conda:
        ENV
    script:
        "../scripts/gather.py"


rule split:
    input:
        PAIRS,
    output:
        MANIFEST,
    params:
        split=STUDY.split_arguments,
    threads: STUDY.threads("prepare")
    resources:
        **rule_resources("prepare"),
    log:
        LOGS / "split.log",
    benchmark:
        BENCHMARKS / "split.tsv"
    conda:
        ENV
    script:
        "../scripts/split.py"
