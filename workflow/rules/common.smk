# Config validation and the paths every rule shares.
import os
import re
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import update_config

from ndmha.config import check_weights, first_runs, typed
from ndmha.environment import DEFORM_BACKEND_ENV
from ndmha.errors import ConfigError
from ndmha.gpus import IDS_ENV as GPU_IDS_ENV, POOL_ENV as GPU_POOL_ENV
from ndmha.gpus import detect as detect_gpus, pool as gpu_pool
from ndmha.hashing import sha256_json
from ndmha.study import resolve

# --config key=value overrides: Snakemake keeps nested values as strings; type them as a config
# file would (train={epochs: 50} -> 50), over config.yaml or the --configfile alike.
update_config(config, typed(dict(workflow.config_settings.config)))
try:  # the study, resolved once (ndmha.study): laid over the file its `extends` names,
    # validated against the schema (its defaults filled in), checked (sizes that must add up,
    # folders that must exist, the experiments); then every pretrained file the run needs,
    # found and hash-checked: before any job
    STUDY = resolve(config, workflow.basedir)
    check_weights(STUDY.config, STUDY.experiments)
except ConfigError as err:  # one line naming the key (and for weights the fetch command)
    raise WorkflowError(str(err)) from None
config.clear()
config.update(STUDY.config)
EXPERIMENTS = STUDY.experiments

# Scripts import the ndmha package from this repository, whatever environment runs them; the
# deformable convs of every job compute on the config's backend (ndmha.models.layers).
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (workflow.basedir, os.environ.get("PYTHONPATH", "")) if p
)
os.environ[DEFORM_BACKEND_ENV] = STUDY.backend


envvars:
    "PYTHONPATH",  # both set just above; declared so that cluster jobs receive them too
    DEFORM_BACKEND_ENV,


RESULTS = STUDY.results_dir
# A local run shares its GPUs among its jobs (ndmha.gpus): counted here without torch, unless
# --resources gpu=N gives the count, and registered as the gpu resource, so that no more network
# jobs run at once than there are GPUs; each job claims its own id from a lock pool and sees only
# it, a job that asks for none sees no GPU. On a cluster SLURM hands out the devices.
LOCAL_GPUS = []
if workflow.local_exec:
    _given = workflow.global_resources.get("gpu").value  # None unless --resources gives it
    LOCAL_GPUS = gpu_pool(detect_gpus(), None if _given is None else int(_given))
    if _given is None and LOCAL_GPUS:
        workflow.register_resource("gpu", len(LOCAL_GPUS))
    os.environ[GPU_POOL_ENV] = str((RESULTS / ".gpu-locks").resolve())
    os.environ[GPU_IDS_ENV] = ",".join(LOCAL_GPUS)
LOGS = RESULTS / "logs"
BENCHMARKS = RESULTS / "benchmarks"  # Snakemake's benchmark: wall time, peak RSS, I/O per job
ENV = "../../envs/ndmha.yaml"
# the tables' and curves' label of every run and experiment (the seeds of one share it); a
# figure of one run says its seed (run_label)
LABELS = {**{e.group: e.label for e in EXPERIMENTS.values()},
          **{name: e.label for name, e in EXPERIMENTS.items()}}
RUNS = {name: {"group": e.group, "seed": e.seed, "trained": e.trained}
        for name, e in EXPERIMENTS.items()}
# one run stands for each experiment in the image grids (its first seed)
REPRESENTATIVE = first_runs(EXPERIMENTS)
COMPARISONS = STUDY.comparisons
# experiments by kind: only trained ones have train jobs, curves and loss weights
TRAINED = [name for name, e in EXPERIMENTS.items() if e.trained]
TRAINING_FREE = [name for name, e in EXPERIMENTS.items() if e.kind == "training-free"]
IMPORTED = [name for name, e in EXPERIMENTS.items() if e.kind == "imported"]
# the whole config's hash, for the provenance table (only the tables rule reads it)
CONFIG_SHA256 = sha256_json(config)

SOURCE_IMAGES, DATA_MASKS = STUDY.source_folders(RESULTS / "demo")
# a protocol pack (data.mask_protocol lama-*, mat-*): its masks, drawn here, pair with the images
PACK = RESULTS / "data" / "pack"
SOURCE_MASKS = PACK / "masks" if STUDY.pack else DATA_MASKS

# the data plan, and the shards that prepare it (data.shards; one gather joins them)
SOURCES = RESULTS / "data" / "sources.csv"
SHARDS = STUDY.data.shards
SHARD = RESULTS / "data" / "shards" / "{shard}"
IMAGES = RESULTS / "data" / "images"
MASKS = RESULTS / "data" / "masks"
CORRUPTED = RESULTS / "data" / "corrupted"
PAIRS = RESULTS / "data" / "pairs.csv"
MANIFEST = RESULTS / "data" / "manifest.csv"


def rule_resources(stage, gpu_by_kind=False):
    """Snakemake resources of a stage's rules from config: cluster.partition / cluster.account
    as slurm_partition / slurm_account, then resources.<stage> (mem_mb, runtime, gpu, gpu_model,
    slurm_partition, ...); empty values and gpu 0 are left out; a local run with GPUs
    (LOCAL_GPUS) gives each network job one at least. ``gpu_by_kind``: the rule runs
    per experiment, and only an experiment that runs a network (trained or imported) asks for
    a GPU: a training-free method or another method's outputs do not."""
    cluster = STUDY.cluster
    merged = {"slurm_partition": cluster.partition, "slurm_account": cluster.account,
              **STUDY.resources[stage]}
    resources = {k: v for k, v in merged.items() if k != "threads" and v not in (None, "", 0)}
    if LOCAL_GPUS and (stage == "train" or gpu_by_kind):
        # a local run with GPUs: a job of a network on a GPU device asks for one at least (the
        # count asked for a cluster, where more), never for more than there are
        on_gpu = STUDY.device != "cpu"
        resources["gpu"] = min(max(1, resources.get("gpu", 0)), len(LOCAL_GPUS)) if on_gpu else 0
    if stage == "train":  # SIGUSR1 ahead of the time limit: checkpoint, exit, be resubmitted
        resources["slurm_extra"] = f"--signal=USR1@{60 * cluster.signal_minutes}"
    if gpu_by_kind and resources.get("gpu"):
        gpus = resources["gpu"]
        # gpu 0: the SLURM executor then ignores gpu_model too
        resources["gpu"] = lambda wc: gpus if EXPERIMENTS[wc.experiment].network else 0
    return resources


def train_retries():
    """``cluster.train_submissions`` - 1: the times a training job may be submitted again, each
    resuming where the last stopped (a time limit's signal, a preemption, scancel); None when
    the key is not set, and the profile's ``retries`` holds (the SLURM profile's 2: three
    submissions; none locally). Snakemake reads a rule's retries when it parses the workflow,
    before it knows the executor, so a value set here holds for local runs too."""
    submissions = STUDY.cluster.train_submissions
    return None if submissions is None else submissions - 1


def one_of(names):
    """A wildcard regex matching exactly these names (none: matches nothing)."""
    return "|".join(re.escape(n) for n in names) or "(?!)"


def train_settings(name):
    """The keyword arguments of ndmha.train.TrainSettings for one experiment: the shared train
    settings, overridden by the experiment's own (ndmha.config.train_settings)."""
    return STUDY.train_settings(name)


def method_params(name):
    """What the predict rule needs to know of an experiment besides its model file."""
    e = EXPERIMENTS[name]
    return {"experiment": name, "kind": e.kind, "architecture": e.architecture,
            "options": e.options, "predictions": e.predictions or None}


def model_file(name):
    return RESULTS / "models" / name / "model.pt"


def predict_input(wildcards):
    """A network's model file (trained by the train rule, or imported by import_weights);
    another method's outputs, its folder; a training-free method needs only the data."""
    e = EXPERIMENTS[wildcards.experiment]
    if e.network:
        return {"model": model_file(wildcards.experiment)}
    if e.kind == "external":
        return {"outside": e.predictions["dir"]}
    return {}


def train_input(wildcards):
    """The manifest, and the weights a fine-tuning run starts from (a change reruns it)."""
    e = EXPERIMENTS[wildcards.experiment]
    return {"manifest": MANIFEST, **({"init_from": e.init_from} if e.init_from else {})}


wildcard_constraints:
    experiment=one_of(EXPERIMENTS),
    shard=r"\d+",
