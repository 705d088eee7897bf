# Data preparation: (demo data) -> the plan -> per shard: PNG->JPG, masks, overlay -> gather ->
# split manifest. data.shards splits the three middle stages into that many jobs each.


if config["data"]["source"] == "demo":

    rule demo_data:
        output:
            images=directory(SOURCE_IMAGES),
            masks=directory(SOURCE_MASKS),
        params:
            n=config["data"]["n_images"],
            size=config["demo"]["image_size"],
            mask_size=config["demo"]["mask_size"],
            ratio=config["demo"]["hole_ratio"],
            seed=config["demo"]["seed"],
            layout=DEMO_LAYOUT,
            masks=config["demo"].get("masks", "strokes"),
            n_val=config["split"].get("test", 0) if DEMO_LAYOUT == "places2" else 0,
        threads: config["resources"]["prepare"]["threads"]
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


rule sources:
    input:
        images=SOURCE_IMAGES,
        masks=SOURCE_MASKS,
    output:
        SOURCES,
    params:
        source=IMAGE_SOURCE,
        n=config["data"]["n_images"],
        protocol=config["data"].get("mask_protocol", "qd-imd"),
        hole=config["data"]["mask_hole"],
        mask_count=config["data"].get("mask_count", 0),
        binary=config["data"].get("mask_binary", "threshold"),
        margin=config["data"].get("border_margin", 1),
        places2=config["data"].get("places2", {}),
        test=config["split"].get("test", 0),
        layout=folder_layout(config),
    threads: config["resources"]["prepare"]["threads"]
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
        size=config["data"]["image_size"],
        quality=config["data"]["jpg_quality"],
    threads: config["resources"]["prepare"]["threads"]
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
        size=config["data"]["image_size"],
        hole=config["data"]["mask_hole"],
        binary=config["data"].get("mask_binary", "threshold"),
    threads: config["resources"]["prepare"]["threads"]
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
    threads: config["resources"]["prepare"]["threads"]
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
    threads: config["resources"]["prepare"]["threads"]
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
        scheme=config["split"]["scheme"],
        test=config["split"].get("test"),
        val=config["split"].get("val", 0),
        seed=config["split"]["seed"],
        celeba=config["split"].get("celeba", {}),
    threads: config["resources"]["prepare"]["threads"]
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
