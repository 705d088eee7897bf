"""Config handling below the resolved study (:mod:`ndmha.study`), free of torch so that
Snakemake's parse of the workflow stays fast: command-line overrides, overlays, experiments and
the checks a schema cannot state. The functions that take a whole config read it validated, its
defaults filled in by the schema (:func:`ndmha.study.validate`): none states a default of its own.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ndmha.classical import TRAINING_FREE
from ndmha.errors import ConfigError

SCALARS = (bool, int, float, type(None))
NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def typed(value: Any) -> Any:
    """``--config`` values with the types a config file would give them.

    Snakemake parses a nested ``--config 'train={epochs: 50}'`` with YAML's BaseLoader, which
    keeps every leaf a string (``'50'``); config files are read with the safe loader (``50``).
    String leaves are read again with the safe loader where that gives a number, a boolean or
    null (``'off'`` -> False, as in a config file), or where it is a number that PyYAML reads as
    text (``'2e-4'``); other strings (paths, names, dates) are kept.
    """
    if isinstance(value, dict):
        return {k: typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [typed(v) for v in value]
    if isinstance(value, str) and value.strip():
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            return value
        if isinstance(parsed, SCALARS):
            return parsed
        # 2e-4: YAML 1.1 needs a dot (2.0e-4) to read a float
        return float(value) if NUMBER.fullmatch(value.strip()) else value
    return value


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` laid over ``base`` as Snakemake merges config files: mappings key by key, any
    other value (a list included) replaced. Neither argument is changed."""
    out = dict(base)
    for key, value in over.items():
        out[key] = (merge(out[key], value) if isinstance(value, dict)
                    and isinstance(out.get(key), dict) else value)
    return out


def compose(cfg: dict[str, Any], root: str | Path) -> dict[str, Any]:
    """A config laid over the file its ``extends`` names (relative to ``root``, the
    repository), which may extend another in turn. ``models`` and ``experiments`` are two
    spellings of what to run, so a layer that gives one drops the other of the layers below it;
    a top-level key set to null is removed (an overlay's way to drop a key of its base). A
    config without ``extends`` is returned as it is, less its nulls."""
    layers, seen = [cfg], set()
    name = cfg.get("extends")
    while name:
        path = (Path(root) / name).resolve()
        if path in seen:
            raise ConfigError(f"config key extends: {name} extends itself")
        seen.add(path)
        try:
            base = yaml.safe_load(path.read_text()) or {}
        except OSError as error:
            raise ConfigError(f"config key extends: {path}: {error.strerror}") from error
        layers.append(base)
        name = base.get("extends")
    out: dict[str, Any] = {}
    for layer in reversed(layers):
        for spelling, other in (("models", "experiments"), ("experiments", "models")):
            if layer.get(spelling) is not None:  # two spellings of one key: the upper one wins
                out.pop(other, None)
        out = merge(out, layer)
    return {k: v for k, v in out.items() if v is not None and k != "extends"}


#: the data.mask_protocol values whose masks are read from data.masks_dir; the schema's others
#: are protocol packs, drawn here (ndmha.data.maskgen.FAMILIES)
FILE_MASKS = ("qd-imd", "nvidia")
#: how the tables and figures name each architecture (an experiment may set its own label)
ARCHITECTURE_LABELS = {"baseline": "baseline U-Net", "ndmha": "NDMHA",
                       "ndmha_released": "NDMHA (released structure)",
                       "telea": "OpenCV Telea", "navier_stokes": "OpenCV Navier-Stokes",
                       "biharmonic": "scikit-image biharmonic"}
#: what produced an experiment's predictions: a network trained here (``trained``, also when
#: fine-tuned from ``init_from``), a method that learns nothing (``training-free``: the floor),
#: a network whose weights come from a file (``imported``: ``weights``), or another codebase's
#: outputs on our test masks (``external``: ``predictions``)
KINDS = ("trained", "training-free", "imported", "external")
#: the kinds whose experiments run a network (and ask for a GPU on a cluster)
NETWORK_KINDS = ("trained", "imported")


def kind_of(architecture: str) -> str:
    """An architecture's kind: ``training-free`` for the methods of :mod:`ndmha.classical`."""
    return "training-free" if architecture in TRAINING_FREE else "trained"


def _kind(name: str, entry: dict[str, Any]) -> tuple[str, str]:
    """(kind, architecture) of one experiments entry: ``predictions`` makes it external (its
    architecture ``external``), ``weights`` imported; otherwise the architecture decides."""
    given = [k for k in ("weights", "init_from", "predictions") if k in entry]
    if len(given) > 1:
        raise ExperimentError(f"experiments.{name}", f"give one of weights, init_from and "
                                                     f"predictions, not {' and '.join(given)}")
    if "predictions" in entry:
        if entry.get("architecture", "external") != "external" or entry.get("options"):
            raise ExperimentError(f"experiments.{name}.predictions",
                                  "another method's outputs take no architecture or options")
        return "external", "external"
    if "architecture" not in entry:
        raise ExperimentError(f"experiments.{name}", "give an architecture (or predictions)")
    architecture = entry["architecture"]
    kind = kind_of(architecture)
    if given and kind == "training-free":
        raise ExperimentError(f"experiments.{name}.{given[0]}",
                              f"'{architecture}' is training-free: it has no weights")
    return ("imported" if "weights" in entry else kind), architecture


class ExperimentError(ValueError):
    """An impossible experiments section: ``key`` names the config key at fault."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key, self.message = key, message


@dataclass(frozen=True)
class Experiment:
    """One evaluated method: an architecture of the registry with its options, its loss weights
    and its training settings (``train`` overrides the shared ``train``), or a training-free
    method (``kind`` training-free: no loss, no training)."""

    name: str
    architecture: str
    options: dict[str, Any] = field(default_factory=dict)
    loss: dict[str, float] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    label: str = ""
    seed_report: str = ""  # the seed report's method this experiment reruns (its table row)
    kind: str = "trained"  # one of KINDS
    weights: str = ""      # imported: a model.pt, or the authors' checkpoint (ndmha_released)
    init_from: str = ""    # trained: fine-tune from these weights
    predictions: dict[str, Any] = field(default_factory=dict)  # external: {dir, pattern, ...}
    group: str = ""        # the configured experiment this run belongs to (its name unseeded)
    seed: int | None = None  # the run's seed under ``seeds`` (None: the single run of today)
    reference: str = ""    # the experiment this one ablates (a default comparison)

    @property
    def trained(self) -> bool:
        return self.kind == "trained"

    @property
    def run_label(self) -> str:
        """The label of this one run: the experiment's, with its seed under ``seeds``."""
        return self.label if self.seed is None else f"{self.label}, seed {self.seed}"

    @property
    def network(self) -> bool:
        """A network runs at test time (trained here or imported): a GPU helps."""
        return self.kind in NETWORK_KINDS


def run_name(experiment: str, seed: int) -> str:
    """The name (and results folder) of one seed's run of an experiment under ``seeds``."""
    return f"{experiment}.seed{seed}"


def first_runs(experiments: dict[str, Experiment]) -> list[str]:
    """The first run of every experiment (its only one without seeds), in order."""
    firsts: dict[str, str] = {}
    for name, e in experiments.items():
        firsts.setdefault(e.group, name)
    return list(firsts.values())


def _own_training(experiment: Experiment) -> dict[str, Any]:
    """What an experiment changes of the shared ``train`` settings, its seed aside: two
    experiments with the same train at an equal budget (steps, images, batch, schedule)."""
    return {k: v for k, v in experiment.train.items() if k != "seed"}


def default_comparisons(experiments: dict[str, Experiment]) -> list[list[str]]:
    """The paired comparisons a study makes unless ``comparisons`` names them: every ablation
    against its ``reference``; NDMHA and the released network against the baseline U-Net (the
    first one trained at their own budget, i.e. with the same train settings, where the config
    has one; else the first U-Net); every trained experiment against the best training-free one
    (``floor``). By experiment (group)."""
    groups = {e.group: e for e in experiments.values()}  # the first run stands for its group
    trained = [g for g, e in groups.items() if e.trained]
    baselines = [g for g in trained if groups[g].architecture == "baseline"]
    # an ablation whose reference ``only`` left out has no pair
    pairs = [[g, e.reference] for g, e in groups.items() if e.reference in groups]
    for g in trained:
        if baselines and not groups[g].reference and \
                groups[g].architecture in ("ndmha", "ndmha_released"):
            pairs.append([g, next((b for b in baselines if _own_training(groups[b])
                                   == _own_training(groups[g])), baselines[0])])
    if any(e.kind == "training-free" for e in groups.values()):
        pairs += [[g, "floor"] for g in trained]
    return [list(p) for p in dict.fromkeys(tuple(p) for p in pairs)]


def check_comparisons(pairs: list[list[str]], experiments: dict[str, Experiment]) -> None:
    groups = {e.group for e in experiments.values()}
    for i, pair in enumerate(pairs):
        unknown = [x for x in pair if x not in groups and x != "floor"]
        if unknown:
            raise ExperimentError(f"comparisons.{i}", f"'{unknown[0]}' is neither an "
                                  f"experiment ({sorted(groups)}) nor 'floor'")


#: an external experiment's predictions entry, with its defaults
PREDICTION_DEFAULTS = {"pattern": "{id}.png", "composited": False, "interpolation": "bicubic"}


def resolve_experiments(cfg: dict[str, Any]) -> dict[str, Experiment]:
    """The experiments of a (schema-valid) config, in order.

    ``models: [a, b]`` is shorthand for one experiment per architecture, named after it, with
    ``loss.<a>`` and ``train.per_model.<a>``. ``experiments: {name: {architecture, options,
    loss, train, label, seed_report}}`` names them freely; an experiment without ``loss`` takes
    ``loss.<architecture>``, and ``train.per_model.<name>`` still applies beneath its ``train``.
    A training-free architecture (telea, navier_stokes, biharmonic) needs no loss and trains not.

    ``seeds: [0, 1, 2]`` (top level, or an experiment's own) runs each trained experiment once
    per seed, as runs named ``<name>.seed<s>`` whose ``train.seed`` is ``s`` (``group`` names the
    experiment); without ``seeds`` each experiment is one run under its own name, as before.
    Training-free, imported and external experiments run once whatever ``seeds`` says.

    ``only: [a, b]`` keeps those experiments of the config and drops the rest (a part of a study,
    its tables over what it ran); the dropped ones are still checked, so a reference stays valid.
    """
    if "models" in cfg and "experiments" in cfg:
        raise ExperimentError("experiments", "give either models (one experiment per "
                                             "architecture) or experiments, not both")
    losses = cfg.get("loss", {})
    per_model = cfg.get("train", {}).get("per_model", {})
    if "experiments" in cfg:
        entries = cfg["experiments"]
        key = "experiments.{name}.loss"
    elif "models" in cfg:
        entries = {m: {"architecture": m} for m in cfg["models"]}
        key = "loss.{name}"
    else:
        raise ExperimentError("(top level)", "give models or experiments")
    experiments = {}
    for name, entry in entries.items():
        kind, architecture = _kind(name, entry)
        loss = entry.get("loss") or losses.get(architecture) or {}
        if kind != "trained" and (entry.get("loss") or entry.get("train")):
            what = (f"'{architecture}' is training-free" if kind == "training-free" else
                    f"experiment '{name}' is {kind} (not trained here)")
            raise ExperimentError(f"experiments.{name}",
                                  f"{what}: it takes no loss or train settings")
        if kind == "trained" and not loss:
            raise ExperimentError(key.format(name=name),
                                  f"no loss weights for experiment '{name}' (give them there "
                                  f"or under loss.{architecture})")
        default_label = ARCHITECTURE_LABELS.get(name, name)
        experiment = Experiment(
            name=name, architecture=architecture, options=dict(entry.get("options", {})),
            loss=dict(loss), train={**per_model.get(name, {}), **entry.get("train", {})},
            label=entry.get("label", default_label), seed_report=entry.get("seed_report", ""),
            kind=kind, weights=entry.get("weights", ""), init_from=entry.get("init_from", ""),
            predictions=({**PREDICTION_DEFAULTS, **entry["predictions"]}
                         if "predictions" in entry else {}),
            group=name, reference=entry.get("reference", ""))
        seeds = entry.get("seeds", cfg.get("seeds"))
        if kind != "trained" or not seeds:
            experiments[name] = experiment
            continue
        for seed in seeds:
            run = run_name(name, seed)
            experiments[run] = dataclasses.replace(
                experiment, name=run, seed=seed, train={**experiment.train, "seed": seed})
    clash = [n for n in experiments if n in entries and experiments[n].group != n]
    if clash:
        raise ExperimentError(f"experiments.{clash[0]}", "this name is also a seeded run's "
                                                         "name: rename the experiment")
    for name, e in experiments.items():
        if e.reference and e.reference not in entries:
            raise ExperimentError(f"experiments.{e.group}.reference",
                                  f"'{e.reference}' is not an experiment ({list(entries)})")
    for name in per_model:  # an architecture not trained in this run may keep its settings
        if name not in entries and name not in ARCHITECTURE_LABELS:
            raise ExperimentError("train.per_model", f"'{name}' is neither an experiment "
                                                     f"({list(experiments)}) nor an architecture")
    only = cfg.get("only")
    if only:
        unknown = [n for n in only if n not in entries]
        if unknown:
            raise ExperimentError("only", f"'{unknown[0]}' is not an experiment ({list(entries)})")
        experiments = {n: e for n, e in experiments.items() if e.group in only}
    return experiments


def train_settings(cfg: dict[str, Any], experiment: Experiment) -> dict[str, Any]:
    """The keyword arguments of ``ndmha.train.TrainSettings`` for one trained run: the config's
    shared ``train`` settings, overridden by the experiment's own (its seed included)."""
    shared = {k: v for k, v in cfg["train"].items() if k != "per_model"}
    return {
        **shared,
        **experiment.train,
        **({"init_from": experiment.init_from} if experiment.init_from else {}),
        "experiment": experiment.name,
        "architecture": experiment.architecture,
        "options": experiment.options,
        "loss": experiment.loss,
        "perceptual": cfg["perceptual"],
    }


def config_error(key: str, message: str) -> None:
    raise ConfigError(f"config key {key}: {message}")


def image_source(cfg: dict[str, Any]) -> str:
    """Where the source images are read from: "places2" (its layout and lists: data.source
    places2, or the demo written in that layout) or "folders" (a folder of PNGs)."""
    source = cfg["data"]["source"]
    return "places2" if source == "places2" or (
        source == "demo" and cfg.get("demo", {}).get("layout") == "places2") else "folders"


def data_protocol(cfg: dict[str, Any]) -> str:
    """``data.protocol``, with ``auto`` resolved from the data's source and layout: Places2's
    layout is the Places2 protocol, CelebA-HQ's layout the CelebA-HQ one; the demo and a folder
    of PNGs stand for neither (``none``), whatever ``data.name`` says."""
    data = cfg["data"]
    declared = data["protocol"]
    if declared != "auto":
        return declared
    if data["source"] == "places2":
        return "places2-nvidia"
    return "celebahq-qdimd" if folder_layout(cfg) == "celebahq" else "none"


def folder_layout(cfg: dict[str, Any]) -> str:
    """The layout the source images are read in: ``data.layout`` describes the user's folder
    (``data.source: folders``); the demo writes its own PNGs, so a config laid over with
    ``data.source: demo`` reads them as PNGs whatever its layout says."""
    data = cfg["data"]
    return data["layout"] if data["source"] == "folders" else "png"


def check_config(cfg: dict[str, Any]) -> dict[str, Experiment]:
    """Checks that JSON schema cannot express: sizes that must add up, folders that must exist,
    the experiments and their files. Returns the experiments (:func:`resolve_experiments`); an
    impossible config raises :class:`~ndmha.errors.ConfigError` naming its key."""
    data, split = cfg["data"], cfg["split"]
    n = data["n_images"]
    places2 = image_source(cfg) == "places2"
    if split["scheme"] == "lists" and not places2:
        config_error("split.scheme", "'lists' takes the dataset's own splits: only Places2 "
                     "has them (data.source: places2, or demo.layout: places2)")
    if places2 and split["scheme"] != "lists":
        config_error("split.scheme", "Places2 is split by its own lists: use 'lists' (its "
                     "validation list gives the test split)")
    if split["scheme"] in ("paper", "lists"):
        if "test" not in split:
            config_error("split.test", f"required when split.scheme is '{split['scheme']}'")
        if split["test"] >= n:
            config_error("split.test", f"{split['test']} test images leave none to train on "
                         f"(data.n_images is {n})")
        if split["test"] + split["val"] >= n:
            config_error("split.val", f"{split['val']} validation and {split['test']} test "
                         f"images leave none to train on (data.n_images is {n})")
    elif split["scheme"] == "celeba":
        if data["source"] != "folders" or data["layout"] != "celebahq":
            config_error("split.scheme", "'celeba' maps CelebA-HQ's index: it needs "
                         "data.source: folders and data.layout: celebahq")
        for key in ("image_list", "partition"):
            listing = split.get("celeba", {}).get(key, "")
            if not listing or not Path(listing).is_file():
                config_error(f"split.celeba.{key}", f"file '{listing}' does not exist (looked "
                             f"in {Path(listing).resolve()})" if listing else
                             "required when split.scheme is 'celeba'")
    elif split["scheme"] == "ids":
        listing = split.get("test_ids", "")
        if not listing or not Path(listing).is_file():
            config_error("split.test_ids", f"file '{listing}' does not exist (looked in "
                         f"{Path(listing).resolve()})" if listing else
                         "required when split.scheme is 'ids'")
    elif n < 5:
        config_error("data.n_images",
                     f"the 'report' split (60/20/20) needs at least 5 images, got {n}")
    if data["source"] in ("folders", "places2"):
        folders = ({"data.images_dir": data.get("images_dir", "")} if data["source"] == "folders"
                   else {"data.places2.root": data.get("places2", {}).get("root", "")})
        if data["mask_protocol"] in FILE_MASKS:  # a pack's masks are drawn, not read
            folders["data.masks_dir"] = data.get("masks_dir", "")
        for key, folder in folders.items():
            if not folder:
                config_error(key, f"must be set when data.source is '{data['source']}'")
            if not Path(folder).is_dir():
                config_error(key, f"folder '{folder}' does not exist "
                             f"(looked in {Path(folder).resolve()})")
        if data["source"] == "places2":
            root = Path(data["places2"]["root"])
            for key in ("train_list", "val_list", "subset_list"):
                listing = data["places2"].get(key)
                if listing and not (root / listing).is_file():
                    config_error(f"data.places2.{key}", f"file '{listing}' does not exist "
                                 f"under {root.resolve()}")
    elif "demo" not in cfg:
        config_error("demo", "required when data.source is 'demo'")
    if data["mask_protocol"] not in FILE_MASKS and data["mask_hole"] != "white":
        config_error("data.mask_hole", f"a protocol pack's masks ({data['mask_protocol']}) are "
                     "white in their holes: use white")
    try:
        experiments = resolve_experiments(cfg)
    except ExperimentError as err:
        config_error(err.key, err.message)
    try:
        check_comparisons(cfg.get("comparisons", []), experiments)
    except ExperimentError as err:
        config_error(err.key, err.message)
    for name, experiment in experiments.items():
        for key, path in (("weights", experiment.weights), ("init_from", experiment.init_from),
                          ("predictions.dir", experiment.predictions.get("dir", ""))):
            if path and not Path(path).exists():
                config_error(f"experiments.{name}.{key}", f"'{path}' does not exist "
                             f"(looked in {Path(path).resolve()})")
        train = {**cfg["train"], **experiment.train}
        if "val" in train.get("train_splits", []) and split["scheme"] != "report" \
                and not split["val"]:
            config_error(f"experiments.{name}.train.train_splits",
                         "no val split to train on (split.scheme 'report', or split.val > 0)")
    return experiments


def pretrained_files(cfg: dict[str, Any], experiments: dict[str, Experiment]
                     ) -> list[tuple[str, Any, str, bool]]:
    """The pretrained files a config's losses and metrics use: (config key, its value, the
    :data:`ndmha.weights.REGISTRY` entry, whether the run needs it). VGG19 is needed when a
    trained experiment weighs the perceptual term and ``perceptual.allow_random_perceptual`` is
    off; the metrics' files unless ``evaluation.allow_missing_weights`` (the demo: n/a)."""
    from ndmha.weights import LPIPS_WEIGHTS

    files = []
    perceptual = cfg["perceptual"]
    if any(e.trained and e.loss.get("perceptual") for e in experiments.values()):
        files.append(("perceptual.vgg19_weights", perceptual["vgg19_weights"], "vgg19",
                      not perceptual["allow_random_perceptual"]))
    evaluation = cfg["evaluation"]
    required = not evaluation["allow_missing_weights"]
    lpips = evaluation["lpips"]
    files.append(("evaluation.lpips.weights", lpips["weights"], LPIPS_WEIGHTS[lpips["net"]],
                  required))
    files.append(("evaluation.fid.inception_weights", evaluation["fid"]["inception_weights"],
                  "inception", required))
    return files


def perceptual_keys(cfg: dict[str, Any], experiments: dict[str, Experiment]
                    ) -> dict[str, float]:
    """The config keys that weigh the perceptual term of a trained experiment, with their
    weights: ``experiments.<name>.loss.perceptual`` where the experiment gives its own loss,
    else ``loss.<architecture>.perceptual``."""
    keys: dict[str, float] = {}
    own = cfg.get("experiments") or {}
    for e in experiments.values():
        if e.trained and e.loss.get("perceptual"):
            key = (f"experiments.{e.group}.loss.perceptual" if own.get(e.group, {}).get("loss")
                   else f"loss.{e.architecture}.perceptual")
            keys[key] = e.loss["perceptual"]
    return keys


def check_weights(cfg: dict[str, Any], experiments: dict[str, Experiment]) -> list[Any]:
    """Find and hash-check every pretrained file the run needs (:func:`pretrained_files`),
    before any job: one :class:`ConfigError` naming each missing or wrong one, its key, the
    paths searched and the fetch command. Returns what was found (``ndmha.weights.Located``)."""
    from ndmha.weights import FETCH_COMMAND, REGISTRY, is_off, locate, perceptual_off

    weighed = perceptual_keys(cfg, experiments)
    if weighed and is_off(cfg["perceptual"]["vgg19_weights"]):
        raise ConfigError(f"config key {perceptual_off(weighed)}")
    found = [(locate(key, value, REGISTRY[name]), needed)
             for key, value, name, needed in pretrained_files(cfg, experiments)]
    blocking = [f for f, needed in found if needed and not f.found and not f.off]
    if blocking:
        searched = list(dict.fromkeys(str(p.parent if p.name in f.spec.names else p)
                                      for f in blocking for p in f.searched))
        raise ConfigError(
            f"pretrained weights missing: {'; '.join(f'{f.key} ({f.problem})' for f in blocking)}"
            f"; searched {', '.join(searched)}; fetch them with {FETCH_COMMAND} or give their "
            f"paths" + "".join(f"; {f.instead}" for f in blocking))
    return [f for f, _ in found]
