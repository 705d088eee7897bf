"""ndmha command line: ``python -m ndmha <command>`` (or ``ndmha <command>``).

Each command, with its one line, is in :data:`COMMANDS` (``python -m ndmha --help`` lists
them; ``python -m ndmha <command> --help`` says what one does and takes).
The workflow itself runs with ``snakemake`` (see README.md).
"""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path
from typing import Any, Callable

from ndmha import inpaint as inpaint_module
from ndmha.models import ARCHITECTURES, build_model, count_gmac, count_parameters
from ndmha.models.layers import AUTO, DEFORM_BACKENDS, set_backend
from ndmha.models.released import HOLE_FILLS
from ndmha.weights import DEFAULT_FETCH, MIRROR_ENV, READ_TIMEOUT_S, REGISTRY, TRIES


def stats(args: argparse.Namespace) -> None:
    """Parameters and GMAC of an architecture at a square input size. GMAC counts deformable
    convs as convs of the same shape; ``gmac_without_deformable`` leaves them out, as tools
    without a formula for the deformable op do (the likely reading of the paper's 15.01)."""
    model = build_model(args.model)
    params, size = count_parameters(model), args.size
    print(f"model={args.model} size={size}")
    if args.model == "ndmha_released":
        from ndmha.models.released import ReleasedNDMHA

        dead = ReleasedNDMHA.dead_branches(size=size)
        as_released = params + dead["batchnorm_parameters"] + dead["modulation_parameters"]
        print(f"as released: params={as_released} (+{dead['modulation_parameters']} in "
              f"modulation convs computed but unused, +{dead['batchnorm_parameters']} in "
              f"BatchNorms never applied), gmac_without_deformable="
              f"{count_gmac(model, size, deformable=False) + dead['modulation_gmac']:.4f} "
              f"(+{dead['modulation_gmac']:.4f} in the unused modulation convs)")
    print(f"params={params} gmac={count_gmac(model, size):.4f} "
          f"gmac_without_deformable={count_gmac(model, size, deformable=False):.4f}")


def backend_argument(args: argparse.Namespace) -> None:
    """--deform-backend, where given, as this process's (and its children's) backend; without
    it the inherited one (torchrun's children: their parent's), else auto."""
    if args.backend is not None:
        set_backend(args.backend, "--deform-backend")


def inpaint(args: argparse.Namespace) -> None:
    """Inpaint one image with a trained model (:mod:`ndmha.inpaint`)."""
    from ndmha.io import setup_logging

    setup_logging()
    backend_argument(args)
    print(inpaint_module.inpaint_file(args.checkpoint, args.image, args.mask, args.out,
                                      args.mask_hole, args.size, args.device))


def train_command(args: argparse.Namespace) -> None:
    """Train one model on a split manifest (what the workflow's train rule runs); under
    torchrun --nproc-per-node N it trains on N GPUs with DistributedDataParallel."""
    import json

    from ndmha import distributed
    from ndmha.io import setup_logging
    from ndmha.train import TrainSettings, train

    setup_logging()
    backend_argument(args)
    try:
        train(args.manifest, args.model_out, args.log_csv, args.checkpoint,
              TrainSettings(**json.loads(args.settings)), args.tensorboard_dir)
    finally:
        distributed.shutdown()


def import_command(args: argparse.Namespace) -> None:
    """Read the authors' netG_model.pth (a whole pickled Luna_Net, or a state dict) as data,
    never running it, and write a model.pt of ndmha_released that predicts like a trained one."""
    from ndmha.foreign_weights import import_released
    from ndmha.io import setup_logging

    setup_logging()
    meta = import_released(args.src, args.out, hole_fill=args.hole_fill,
                           channel_order=args.channel_order, experiment=args.experiment,
                           image_size=args.image_size)
    for warning in meta["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{args.out}: ndmha_released {meta['options']}, {meta['parameters']} parameters, "
          f"from {meta['provenance']['source_file']} (sha256 "
          f"{meta['provenance']['source_sha256'][:12]}...), {meta['provenance']['imported']}")


def export_command(args: argparse.Namespace) -> None:
    """Write the split's images and masks (LaMa's layout, MAT's or the release's) so that
    another method runs on exactly our masks; score its outputs with an experiment's
    predictions: entry."""
    from ndmha.evaluate import export_test
    from ndmha.io import setup_logging

    setup_logging()
    count = export_test(args.manifest, args.out, args.layout, args.split)
    print(f"{args.out}: {count} {args.split} images in the {args.layout} layout")


def fetch_weights_command(args: argparse.Namespace) -> None:
    """Fetch the pretrained files (torch's hub cache, or --dir), each checked against its
    publisher's hash; a file already there and right is kept. Every file is tried; the command
    fails when one could not be fetched. Configs that leave a weights key empty or give a file
    name alone find them in torch's hub cache."""
    from ndmha.weights import REGISTRY, WeightsError, fetch

    failed, names = [], args.names or list(DEFAULT_FETCH)
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise WeightsError(f"'{unknown[0]}' is not a pretrained file here: one of "
                           f"{', '.join(sorted(REGISTRY))}")
    for name in names:
        spec = REGISTRY[name]
        try:
            path, status = fetch(spec, args.dir, args.mirror, progress=not args.quiet,
                                 timeout=args.timeout, tries=args.tries)
        except WeightsError as error:
            print(f"{spec.file}: error: {error}", file=sys.stderr)
            failed.append(spec.file)
            continue
        print(f"{spec.file}: {'fetched' if status == 'fetched' else 'already there'}, "
              f"SHA-256 {spec.hash_prefix}... checked: {path} ({spec.use})")
    if failed:
        raise WeightsError(f"{len(failed)} of {len(names)} not fetched: "
                           f"{', '.join(failed)}")


def preflight_command(args: argparse.Namespace) -> int:
    """Check what a run needs before it starts, and project its cost on this device: one table
    on screen and in --out; exit status 1 when anything blocks, each blocker on a line."""
    from ndmha.io import atomic_open, setup_logging
    from ndmha.preflight import blocker_lines, run_preflight
    from ndmha.study import load

    setup_logging()
    study = load(args.configfile, args.config)
    report = run_preflight(study, args.scratch, steps=args.steps, test_images=args.test_images,
                           dev=not args.no_dev_run)
    title = " ".join(str(p) for p in args.configfile) or "config.yaml"
    text = report.markdown(title)
    print(text)
    out = Path(args.out) if args.out else study.results_dir / "preflight.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(out) as fh:  # a killed preflight leaves no half table
        fh.write(text)
    for line in blocker_lines(report):
        print(line, file=sys.stderr)
    print(f"the preflight's table is written to {out}", file=sys.stderr)
    return 1 if report.blockers else 0


def config_command(args: argparse.Namespace) -> None:
    """The config Snakemake would run with these files and overrides (merged, laid over the
    files their ``extends`` names, checked against the schema), as YAML; or one key of it."""
    import yaml

    from ndmha.errors import ConfigError
    from ndmha.study import load

    value = load(args.configfile, args.config).config
    for part in args.get.split(".") if args.get else []:
        if not isinstance(value, dict) or part not in value:
            raise ConfigError(f"config key {args.get}: not in the config")
        value = value[part]
    print(value if isinstance(value, (str, int, float)) else
          yaml.safe_dump(value, sort_keys=False).rstrip())


def protocol_command(args: argparse.Namespace) -> None:
    """Protocol packs, the mask sets later papers compare on (LaMa's thin, medium and thick,
    MAT's large and small), their generators ported so that a seed gives the original's mask:
    ``build NAME --out DIR`` writes a pack (the masks, a manifest with each file's SHA-256, and
    one hash of the whole set in protocol.json); ``verify DIR`` checks a pack built or
    downloaded elsewhere (every byte, the set hash, every mask against its generator);
    ``list`` names the protocols."""
    from ndmha.data.packs import PROTOCOLS, build, verify
    from ndmha.errors import ConfigError
    from ndmha.io import setup_logging

    setup_logging()
    if args.action == "list":
        for name, protocol in PROTOCOLS.items():
            print(f"{name}: {protocol['count']:,} masks at 256 px, seeds from {protocol['seed']}")
        return
    if not args.target or (args.action == "build" and not args.out):
        raise ConfigError(f"protocol {args.action}: give "
                          + ("NAME and --out DIR" if args.action == "build" else "DIR"))
    if args.action == "build":
        record = build(args.target, args.out, args.count, args.threads, args.shards)
    else:
        record = verify(args.target, args.threads)
    print(f"{record['protocol']}: {record['masks']:,} masks ({len(record['left_out'])} left out "
          f"by the generator), set_sha256 {record['set_sha256']}"
          + (" verified" if args.action == "verify" else f", in {args.out}"))


def compare_recorded(args: argparse.Namespace) -> None:
    """Seed-aware paired comparisons (the workflow's comparisons.md without its per-image
    columns) from a CSV of recorded per-seed test means, e.g. docs/study_runs.csv: runs of
    several machines on the same test images, as Markdown."""
    from ndmha.tables import comparisons_view, recorded_comparisons, to_markdown
    from ndmha.tables.comparisons import COMPARISONS_NOTE

    table, note = recorded_comparisons(args.runs, args.pair)
    if args.metric:
        table = table[table.metric.isin(args.metric)]
    print(to_markdown(comparisons_view(table), note + "\n\n" + COMPARISONS_NOTE))


def scorecard_recorded(args: argparse.Namespace) -> None:
    """The reproduction scorecard from recorded per-seed test means (e.g. docs/study_runs.csv:
    runs made on several machines on the same test images), for the experiments and comparisons
    of a config, as the workflow's scorecard.md would read had every run been on one disk."""
    from ndmha.study import load
    from ndmha.tables import recorded_scorecard, to_markdown
    from ndmha.tables.scorecard import scorecard_notes, scorecard_view
    from ndmha.train import TrainSettings

    study = load(args.configfile, [*args.config, "only=null"])  # every experiment of the config
    groups = {e.group: {"architecture": e.architecture, "options": e.options, "kind": e.kind,
                        "batch": TrainSettings(**study.train_settings(name)).batch_size
                        if e.trained else None}
              for name, e in study.experiments.items()}
    card = recorded_scorecard(args.runs, groups, study.comparisons, study.data.name,
                              study.data.protocol)
    print(to_markdown(scorecard_view(card), scorecard_notes(card)))


def crossing_command(args: argparse.Namespace) -> None:
    """Where a's seed-mean validation PSNR passes b's, or the gap's trend, from train_log.csv
    files (one a seed, in the same seed order on both sides)."""
    import pandas as pd

    from ndmha.errors import DataError
    from ndmha.uncertainty import crossing

    def curves(paths: list[str]) -> dict[int, pd.Series]:
        out = {}
        for i, path in enumerate(paths):
            try:
                log = pd.read_csv(path)
                out[i] = log.set_index("steps")["val_psnr"].astype(float)
            except (OSError, KeyError, pd.errors.ParserError) as error:
                raise DataError(f"{path}: not a training log with steps and val_psnr "
                                f"({error})") from error
        return out

    a, b = curves(args.a), curves(args.b)
    result = crossing(a, b, args.window)
    if args.figure:
        from ndmha.figures import crossing_figure

        floors = {}
        for item in args.floor or []:
            label, _, value = item.rpartition("=")
            try:
                floors[label] = float(value)
            except ValueError as error:
                raise DataError(f"--floor {item!r}: expected LABEL=PSNR") from error
        crossing_figure({args.labels[0]: list(a.values()), args.labels[1]: list(b.values())},
                        args.figure, floors)
    def spread(low: float | None, high: float | None) -> str:
        return f" (95 % interval {low:+.3f} to {high:+.3f})" if low is not None else ""

    pairs = f"{result['seed_pairs']} seed pair{'s' if result['seed_pairs'] > 1 else ''}"
    if result["crossing_step"] is not None:
        print(f"a passes b at step {result['crossing_step']:,} (seed-mean validation PSNR) and "
              f"stays above; per seed pair: {result['pair_crossings']}")
    else:
        closes = (f"the mean trend closes it at about step {result['closes_at_step']:,}"
                  if result["closes_at_step"] else "the mean trend does not close it")
        print(f"a does not pass b within {result['last_step']:,} steps; {closes}")
    print(f"a − b at step {result['last_step']:,}: {result['last_gap']:+.2f} dB; over the last "
          f"{args.window:,} steps: {result['window_gap']:+.3f} dB on average"
          f"{spread(result['window_gap_low'], result['window_gap_high'])}, trend "
          f"{result['slope_per_1000']:+.3f} dB per 1,000 steps"
          f"{spread(result['slope_low'], result['slope_high'])}; {pairs}")


# -- each command's arguments -----------------------------------------------------------------

CONFIG_FILES_HELP = ("the config files, merged in order, as snakemake takes them (default "
                     "config.yaml)")
BACKEND_HELP = ("NDMHA's deformable conv (default: the parent process's, else auto: fused on "
                "a CPU, torchvision on a GPU)")


def config_arguments(p: argparse.ArgumentParser, files_help: str = CONFIG_FILES_HELP) -> None:
    """--configfile and --config, as snakemake takes them."""
    p.add_argument("--configfile", nargs="+", default=[], help=files_help)
    p.add_argument("--config", nargs="+", default=[], metavar="KEY=VALUE",
                   help="overrides, as snakemake's --config")


def stats_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", choices=sorted(ARCHITECTURES), required=True,
                   help="an architecture of the registry (its default options)")
    p.add_argument("--size", type=int, default=256, help="square input size (default 256)")


def inpaint_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="a model.pt written by the workflow")
    p.add_argument("--image", required=True, help="the image (any size, PNG or JPG)")
    p.add_argument("--mask", required=True, help="the mask (any size; resized to the image)")
    p.add_argument("--out", required=True, help="where to write the result (PNG or JPG)")
    p.add_argument("--mask-hole", choices=["white", "black"], default="white",
                   help="which colour marks the holes in the mask (default white)")
    p.add_argument("--size", type=int, default=None,
                   help="run the network at SIZE x SIZE and resize back (default: pad, no resize)")
    p.add_argument("--device", default="auto", help="auto (cuda when present), cpu, cuda")
    p.add_argument("--deform-backend", dest="backend", default=None, choices=sorted([AUTO, *DEFORM_BACKENDS]),
                   help=BACKEND_HELP)


def train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--manifest", required=True)
    p.add_argument("--model-out", required=True)
    p.add_argument("--log-csv", required=True)
    p.add_argument("--checkpoint", required=True, help="the resume point (kept between runs)")
    p.add_argument("--settings", required=True,
                   help='TrainSettings as JSON, e.g. \'{"architecture": "ndmha", "epochs": 200}\'')
    p.add_argument("--tensorboard-dir", default=None, help="where the event files go")
    p.add_argument("--deform-backend", dest="backend", default=None, choices=sorted([AUTO, *DEFORM_BACKENDS]),
                   help=BACKEND_HELP)


def import_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", help="the authors' checkpoint (e.g. checkpoints/netG_model.pth)")
    p.add_argument("out", help="the model.pt to write")
    p.add_argument("--hole-fill", choices=HOLE_FILLS, default="black",
                   help="what the network's input holds in the holes (default black: "
                        "docs/architecture.md)")
    p.add_argument("--channel-order", choices=["bgr", "rgb"], default="bgr",
                   help="the order the checkpoint was trained in (the release: bgr, permuted "
                        "away so the model takes RGB)")
    p.add_argument("--experiment", default="ndmha_released_imported",
                   help="the name stored in the file (a workflow experiment's name wins)")
    p.add_argument("--image-size", type=int, default=None,
                   help="the size it will be scored at (a warning when not 256)")


def export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", help="the folder to write (must not exist or be empty)")
    p.add_argument("--manifest", default="results/data/manifest.csv",
                   help="the workflow's split manifest (default results/data/manifest.csv)")
    p.add_argument("--layout", choices=["lama", "mat", "release"], default="lama",
                   help="lama: <id>.png beside <id>_mask.png (255 = hole); mat: image/, mask/ "
                        "(0 = hole); release: input/, mask/, target/")
    p.add_argument("--split", default="test", help="the split to export (default test)")


def fetch_weights_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="*", metavar="NAME",
                   help=f"which files: {', '.join(sorted(REGISTRY))} (default: "
                        f"{' '.join(DEFAULT_FETCH)}; vgg16 is LPIPS's net: vgg)")
    p.add_argument("--dir", type=Path, default=None,
                   help="where to put them (default: torch's hub cache, $TORCH_HOME/hub/"
                        "checkpoints; a config then names each file by its path)")
    p.add_argument("--mirror", default=None,
                   help=f"a base URL serving the files under their published names, instead "
                        f"of the publishers' (or ${MIRROR_ENV})")
    p.add_argument("--timeout", type=float, default=READ_TIMEOUT_S,
                   help=f"seconds without a byte before a try gives up (default "
                        f"{READ_TIMEOUT_S})")
    p.add_argument("--tries", type=int, default=TRIES,
                   help=f"tries of each file when the server stalls or cuts the body short "
                        f"(default {TRIES})")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def preflight_arguments(p: argparse.ArgumentParser) -> None:
    config_arguments(p)
    p.add_argument("--out", default=None, help="the table's file (default: preflight.md "
                                               "under the config's results_dir)")
    p.add_argument("--steps", type=int, default=3, help="training steps of each dev run")
    p.add_argument("--test-images", type=int, default=4,
                   help="test images each dev run predicts and scores")
    p.add_argument("--no-dev-run", action="store_true",
                   help="the checks alone: no dev run, no projection")
    p.add_argument("--scratch", type=Path, default=None,
                   help="keep the plan, sample and dev runs here (default: a temporary folder)")


def config_command_arguments(p: argparse.ArgumentParser) -> None:
    config_arguments(p)
    p.add_argument("--get", default="", metavar="KEY",
                   help="one key, dotted (results_dir, train.epochs)")


def protocol_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["build", "verify", "list"])
    p.add_argument("target", nargs="?", default="", help="build: the protocol; verify: a pack")
    p.add_argument("--out", default="", help="build: the pack's folder (must not exist)")
    p.add_argument("--count", type=int, default=None,
                   help="build: masks in the set (default the protocol's)")
    p.add_argument("--threads", type=int, default=1, help="threads drawing or checking masks")
    p.add_argument("--shards", type=int, default=1, help="build: processes, each a shard")


def compare_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", help="CSV: experiment, seed, kind, test_images and the metrics")
    p.add_argument("--pair", nargs=2, action="append", required=True, metavar=("A", "B"),
                   help="a − b (repeat; 'floor' is the best training-free row)")
    p.add_argument("--metric", action="append", default=None,
                   help="only these metrics (repeat; default every recorded one)")


def scorecard_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", help="CSV: experiment, seed, kind, test_images, steps, machine and "
                                "the metrics")
    config_arguments(p, "the config files that ran them, merged in order (default config.yaml)")


def crossing_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--a", nargs="+", required=True, help="a's train_log.csv files, one a seed")
    p.add_argument("--b", nargs="+", required=True, help="b's, in the same seed order")
    p.add_argument("--window", type=int, default=2000,
                   help="the trend's last steps (default 2,000)")
    p.add_argument("--figure", default=None,
                   help="also draw both curves against steps (PNG), seeds as a band")
    p.add_argument("--labels", nargs=2, default=["a", "b"], metavar=("A", "B"),
                   help="the two networks' names in the figure")
    p.add_argument("--floor", action="append", metavar="LABEL=PSNR",
                   help="a training-free method's PSNR on the same split, as a line (repeat)")


#: every command: its function (whose docstring is its --help description), its one line in
#: the module's list and in ``--help``, and its arguments
COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], Any], str,
                          Callable[[argparse.ArgumentParser], None]]] = {
    "stats": (stats, "parameters and GMAC of an architecture at a square input size",
              stats_arguments),
    "inpaint": (inpaint, "inpaint your own image with a trained model (a model.pt)",
                inpaint_arguments),
    "train": (train_command, "train one model on a split manifest (the train rule's; torchrun "
                             "for several GPUs)", train_arguments),
    "import-released": (import_command, "the authors' checkpoint as a model.pt (read as data, "
                                        "never run)", import_arguments),
    "export-test": (export_command, "the test split's images and masks in another codebase's "
                                    "layout", export_arguments),
    "fetch-weights": (fetch_weights_command, "the pretrained files of the objective and the "
                                             "metrics, hash-checked", fetch_weights_arguments),
    "preflight": (preflight_command, "check a config's data, weights and device, dev-run it, "
                                     "project its cost", preflight_arguments),
    "config": (config_command, "the config a run gets (merged, laid over its bases, checked), "
                               "or one key", config_command_arguments),
    "protocol": (protocol_command, "protocol packs: build a mask set the field compares on, "
                                   "verify one built elsewhere", protocol_arguments),
    "compare-recorded": (compare_recorded, "seed-aware paired comparisons of runs recorded in "
                                           "a CSV", compare_arguments),
    "scorecard-recorded": (scorecard_recorded, "the reproduction scorecard of runs recorded in "
                                               "a CSV", scorecard_arguments),
    "crossing": (crossing_command, "where one network's validation curve passes another's, or "
                                   "its trend", crossing_arguments),
}

#: a command whose --help says more than its function's docstring
DESCRIPTIONS = {"inpaint": inpaint_module.__doc__}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ndmha", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", title="commands")
    for name, (function, summary, arguments) in COMMANDS.items():
        p = commands.add_parser(name, help=summary,
                                description=inspect.cleandoc(DESCRIPTIONS.get(
                                    name, function.__doc__)),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
        arguments(p)
        p.set_defaults(func=function)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command is None:
        build_parser().print_help()
        return 0
    from ndmha.errors import ConfigError, DataError, TrainingInterrupted

    try:
        status = args.func(args)
    except (ConfigError, DataError) as error:  # bad input: one line naming the file or key
        print(f"ndmha {args.command}: error: {error}", file=sys.stderr)
        return 2
    except TrainingInterrupted as stopped:  # a signal: checkpoint written, run it again
        print(f"ndmha {args.command}: {stopped}", file=sys.stderr)
        return TrainingInterrupted.EXIT_STATUS
    return status or 0


if __name__ == "__main__":
    sys.exit(main())
