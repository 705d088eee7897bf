# Data preparation: (demo data) -> PNG->JPG -> masks -> overlay -> split manifest.


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


rule convert:
    input:
        SOURCE_IMAGES,
    output:
        directory(IMAGES),
    params:
        n=config["data"]["n_images"],
        size=config["data"]["image_size"],
        quality=config["data"]["jpg_quality"],
    threads: config["resources"]["prepare"]["threads"]
    resources:
        **rule_resources("prepare"),
    log:
        LOGS / "convert.log",
    benchmark:
        BENCHMARKS / "convert.tsv"
    conda:
        ENV
    script:
        "../scripts/convert.py"


rule masks:
    input:
        SOURCE_MASKS,
    output:
        directory(MASKS),
    params:
        n=config["data"]["n_images"],
        size=config["data"]["image_size"],
        hole=config["data"]["mask_hole"],
    threads: config["resources"]["prepare"]["threads"]
    resources:
        **rule_resources("prepare"),
    log:
        LOGS / "masks.log",
    benchmark:
        BENCHMARKS / "masks.tsv"
    conda:
        ENV
    script:
        "../scripts/masks.py"


rule overlay:
    input:
        images=IMAGES,
        masks=MASKS,
    output:
        corrupted=directory(CORRUPTED),
        pairs=PAIRS,
    threads: config["resources"]["prepare"]["threads"]
    resources:
        **rule_resources("prepare"),
    log:
        LOGS / "overlay.log",
    benchmark:
        BENCHMARKS / "overlay.tsv"
    conda:
        ENV
    script:
        "../scripts/overlay.py"


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
