"""The study a config describes, resolved once: ``load(files, overrides) -> Study``.

The config files are merged in order (``config.yaml`` without any, as the Snakefile does), the
``key=value`` overrides laid over them with the types a config file would give them, the result
laid over the file its ``extends`` names, validated against the schema (which fills in every
default: the schema is the one place a default lives) and checked
(:func:`ndmha.config.check_config`).
What comes out is typed: a section per stage (data, demo, split, evaluation, cluster), the
experiments, and the arguments each stage takes, named as the stage names them. The workflow's
rules, the preflight, the GPU study and the command line read this object, not the raw config.

Torch-free: Snakemake resolves it when it parses the workflow.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ndmha.config import (
    Experiment,
    FILE_MASKS,
    check_config,
    compose,
    data_protocol,
    default_comparisons,
    folder_layout,
    image_source,
    merge,
    train_settings,
    typed,
)
from ndmha.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"
#: the SLURM profile, whose ``retries`` (plus one) are a training job's submissions unless
#: ``cluster.train_submissions`` says otherwise
SLURM_PROFILE = ROOT / "workflow" / "profiles" / "slurm" / "config.yaml"
STAGES = ("prepare", "train", "evaluate")


@dataclass(frozen=True)
class Data:
    """``data``: the source images and masks, and how they are prepared."""

    source: str          # demo | folders | places2
    name: str
    n_images: int
    image_size: int
    jpg_quality: int
    mask_hole: str       # the colour of a hole in the source masks
    mask_protocol: str   # qd-imd | nvidia | a protocol pack (lama-*, mat-*)
    mask_count: int
    mask_binary: str
    border_margin: int
    shards: int
    layout: str          # how the source images are read (the demo's: png)
    protocol: str        # the paper's protocol the data stands for (auto resolved)
    image_source: str    # places2 | folders: the reader of the source images
    images_dir: str
    masks_dir: str
    places2: dict[str, Any]


@dataclass(frozen=True)
class Demo:
    """``demo``: the embedded demo's procedural faces and masks."""

    image_size: int
    mask_size: int
    hole_ratio: tuple[float, float]
    seed: int
    layout: str
    masks: str


@dataclass(frozen=True)
class Split:
    """``split``: how the pairs are dealt into train, val and test."""

    scheme: str
    seed: int
    test: int | None
    val: int
    celeba: dict[str, str]
    test_ids: str


@dataclass(frozen=True)
class Evaluation:
    """``evaluation``: the metrics' settings and the grids' size."""

    lpips: dict[str, Any]
    fid: dict[str, Any]
    grid_images: int
    allow_missing_weights: bool


@dataclass(frozen=True)
class Cluster:
    """``cluster``: SLURM's defaults and a training job's submissions."""

    partition: str
    account: str
    signal_minutes: int
    train_submissions: int | None  # None: the SLURM profile's retries decide

    @property
    def submissions(self) -> int:
        """A training job's submissions on a cluster: ``cluster.train_submissions``, else the
        SLURM profile's ``retries`` plus one."""
        if self.train_submissions is not None:
            return self.train_submissions
        return int(yaml.safe_load(SLURM_PROFILE.read_text()).get("retries", 0)) + 1


@dataclass(frozen=True)
class Study:
    """A resolved config: typed sections, the experiments, and each stage's arguments."""

    config: dict[str, Any]  # the composed, validated config, its defaults filled in
    results_dir: Path
    data: Data
    demo: Demo | None
    split: Split
    evaluation: Evaluation
    cluster: Cluster
    train: dict[str, Any]  # the shared train settings (``per_model`` aside)
    resources: dict[str, dict[str, Any]]
    experiments: dict[str, Experiment]
    comparisons: list[list[str]]
    backend: str  # the deformable convs' (ndmha.deform_backend; auto: by each job's device)
    smoke_test: bool

    # -- the data stages --------------------------------------------------------------------

    @property
    def pack(self) -> str | None:
        """The protocol pack whose masks the run draws (``data.mask_protocol`` lama-* or
        mat-*), or None (masks read from ``data.masks_dir``, or the demo's)."""
        return None if self.data.mask_protocol in FILE_MASKS else self.data.mask_protocol

    def source_folders(self, demo_dir: Path) -> tuple[Path, Path]:
        """Where the source images and masks are; the demo draws its own into ``demo_dir``. A
        protocol pack's masks are drawn elsewhere (:attr:`pack`): the masks folder here is the
        data's own."""
        data = self.data
        if data.source == "demo":
            images = "places2" if self.demo and self.demo.layout == "places2" else "images"
            return demo_dir / images, demo_dir / "masks"
        if data.source == "places2":
            return Path(data.places2["root"]), Path(data.masks_dir)
        return Path(data.images_dir), Path(data.masks_dir)

    @property
    def pack_arguments(self) -> dict[str, Any]:
        """``ndmha.data.packs.build``'s settings: the pack and its masks, enough for every image
        (LaMa's generator leaves about 2 % of its seeds without a mask: a tenth more, and 16)."""
        n = self.data.n_images
        return {"name": self.pack, "count": n + n // 10 + 16}

    @property
    def demo_arguments(self) -> dict[str, Any]:
        """``ndmha.data.demo.make_demo_dataset``'s settings (its folders and threads aside)."""
        demo = self.demo
        assert demo is not None, "data.source is not demo"
        return {"n_images": self.data.n_images, "n_masks": self.data.n_images,
                "size": demo.image_size, "mask_size": demo.mask_size, "seed": demo.seed,
                "ratio_range": demo.hole_ratio, "layout": demo.layout, "masks": demo.masks,
                "n_val": (self.split.test or 0) if demo.layout == "places2" else 0}

    @property
    def plan_arguments(self) -> dict[str, Any]:
        """``ndmha.data.sources.plan_sources``'s settings (its files and threads aside)."""
        data = self.data
        return {"source": data.image_source, "n_images": data.n_images,
                "mask_protocol": data.mask_protocol, "mask_hole": data.mask_hole,
                "mask_count": data.mask_count, "mask_binary": data.mask_binary,
                "border_margin": data.border_margin, "places2": data.places2,
                "test": self.split.test or 0, "layout": data.layout}

    @property
    def convert_arguments(self) -> dict[str, Any]:
        """The image conversion's settings (``convert_shard``, ``convert_listed``)."""
        return {"size": self.data.image_size, "quality": self.data.jpg_quality}

    @property
    def mask_arguments(self) -> dict[str, Any]:
        """The mask preparation's settings (``masks_shard``, ``prepare_listed``)."""
        return {"size": self.data.image_size, "mask_hole": self.data.mask_hole,
                "mask_binary": self.data.mask_binary}

    @property
    def split_arguments(self) -> dict[str, Any]:
        """``ndmha.data.split.make_split``'s settings (its files aside)."""
        s = self.split
        return {"scheme": s.scheme, "seed": s.seed, "test": s.test, "val": s.val,
                "celeba": s.celeba, "test_ids": s.test_ids}

    # -- training and evaluation ----------------------------------------------------------

    def train_settings(self, name: str) -> dict[str, Any]:
        """The keyword arguments of ``ndmha.train.TrainSettings`` for one trained run."""
        return train_settings(self.config, self.experiments[name])

    def run_train(self, name: str) -> dict[str, Any]:
        """One run's train settings as the loop reads them (shared, then its own)."""
        return {**self.train, **self.experiments[name].train}

    @property
    def device(self) -> str:
        return self.train["device"]

    @property
    def metric_arguments(self) -> dict[str, Any]:
        """``ndmha.evaluate.score``'s settings (its files aside)."""
        return {"dataset": self.data.name, "protocol": self.data.protocol,
                "lpips": self.evaluation.lpips, "fid": self.evaluation.fid,
                "device": self.device}

    @property
    def protocol_facts(self) -> dict[str, Any]:
        """What the protocol card (``ndmha.tables.protocol``) says of the config."""
        data = self.data
        masks = (f"protocol pack {self.pack}" if self.pack else
                 f"the demo's {self.demo.masks} masks" if data.source == "demo" and self.demo
                 else f"{data.masks_dir} ({data.mask_protocol})")
        return {"dataset": data.name, "protocol": data.protocol, "mask_protocol": masks,
                "mask_hole": data.mask_hole, "split_scheme": self.split.scheme,
                "split_seed": self.split.seed, "image_size": data.image_size}

    def threads(self, stage: str) -> int:
        return self.resources[stage]["threads"]


def validate(cfg: dict[str, Any]) -> None:
    """Validate against the schema and fill in its defaults, in place: the recipe that
    ``snakemake.utils.validate`` runs (jsonschema's FAQ), called through jsonschema itself so
    that a study resolves where Snakemake is not installed (the GPU study's machine). An error
    is one line naming the key."""
    from jsonschema import Draft202012Validator, validators
    from jsonschema.exceptions import best_match

    properties = Draft202012Validator.VALIDATORS["properties"]

    def fill_defaults(validator, props, instance, schema):  # noqa: ANN001 (jsonschema's hook)
        if isinstance(instance, dict):
            for name, sub in props.items():
                if "default" in sub:
                    instance.setdefault(name, copy.deepcopy(sub["default"]))
        yield from properties(validator, props, instance, schema)

    schema = yaml.safe_load(SCHEMA.read_text())
    filling = validators.extend(Draft202012Validator, {"properties": fill_defaults})
    error = best_match(filling(schema).iter_errors(cfg))  # the error .validate() raises
    if error is not None:
        where = ".".join(str(p) for p in error.absolute_path) or "(top level)"
        raise ConfigError(f"config key {where}: {error.message}")


def read(files: list[str | Path] | tuple = (), overrides: list[str] | tuple = ()
         ) -> dict[str, Any]:
    """The config files merged in order (``config.yaml`` without any, as the Snakefile does),
    then ``key=value`` overrides (YAML values, typed as :func:`ndmha.config.typed` types the
    workflow's), merged as Snakemake merges them (:func:`ndmha.config.merge`)."""
    cfg: dict[str, Any] = {}
    for path in files or [ROOT / "config.yaml"]:
        try:
            cfg = merge(cfg, yaml.safe_load(Path(path).read_text()) or {})
        except OSError as error:
            raise ConfigError(f"--configfile {path}: {error.strerror}") from error
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--config {item}: give key=value")
        cfg = merge(cfg, {key: typed(yaml.safe_load(value) if value else value)})
    return cfg


def resolve(cfg: dict[str, Any], root: str | Path = ROOT) -> Study:
    """A merged config (files and overrides, as Snakemake holds it) laid over its bases,
    validated, checked and typed."""
    cfg = compose(cfg, root)
    validate(cfg)
    experiments = check_config(cfg)
    data, split, demo = cfg["data"], cfg["split"], cfg.get("demo")
    cluster = cfg["cluster"]
    return Study(
        config=cfg,
        results_dir=Path(cfg["results_dir"]),
        data=Data(
            source=data["source"], name=data["name"], n_images=data["n_images"],
            image_size=data["image_size"], jpg_quality=data["jpg_quality"],
            mask_hole=data["mask_hole"], mask_protocol=data["mask_protocol"],
            mask_count=data["mask_count"], mask_binary=data["mask_binary"],
            border_margin=data["border_margin"], shards=data["shards"],
            layout=folder_layout(cfg), protocol=data_protocol(cfg),
            image_source=image_source(cfg), images_dir=data.get("images_dir", ""),
            masks_dir=data.get("masks_dir", ""), places2=data.get("places2", {})),
        demo=None if demo is None else Demo(
            image_size=demo["image_size"], mask_size=demo["mask_size"],
            hole_ratio=tuple(demo["hole_ratio"]), seed=demo["seed"], layout=demo["layout"],
            masks=demo["masks"]),
        split=Split(scheme=split["scheme"], seed=split["seed"], test=split.get("test"),
                    val=split["val"], celeba=split.get("celeba", {}),
                    test_ids=split.get("test_ids", "")),
        evaluation=Evaluation(**cfg["evaluation"]),
        cluster=Cluster(partition=cluster["partition"], account=cluster["account"],
                        signal_minutes=cluster["signal_minutes"],
                        train_submissions=cluster.get("train_submissions")),
        train={k: v for k, v in cfg["train"].items() if k != "per_model"},
        resources=cfg["resources"],
        experiments=experiments,
        comparisons=cfg.get("comparisons") or default_comparisons(experiments),
        backend=cfg["ndmha"]["deform_backend"],
        smoke_test=cfg["smoke_test"],
    )


def load(files: list[str | Path] | tuple = (), overrides: list[str] | tuple = (),
         root: str | Path = ROOT) -> Study:
    """The study that ``snakemake --configfile FILES --config OVERRIDES`` would run."""
    return resolve(read(files, overrides), root)
