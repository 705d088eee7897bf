"""Preflight: what a real run needs, checked before days of training, and what it will cost.

``python -m ndmha preflight --configfile configs/paper_celebahq.yaml`` (``make preflight``):

- **config**: the schema and the checks the workflow makes when it builds its DAG;
- **data**: the counts against the config, every source file readable (headers; the first bad
  one named), the image sizes, the masks' polarity and hole ratios on a sample;
- **weights**: every pretrained file the objective and the metrics need, present and
  hash-right (:mod:`ndmha.weights`);
- **device**: what ``train.device`` resolves to, its name, memory and bf16 support, and the
  deformable-conv backend ``auto`` picks there;
- **a fast dev run** of every trained experiment on a few of the real images, after Lightning's
  ``fast_dev_run``: the data chain on them, a few training steps with the configured objective
  and batch, one validation batch, prediction and every metric on a few test images. It runs in
  a scratch folder; under ``results_dir`` only the table is written (``preflight.md``);
- **projection**: from the measured times, the wall time of each experiment and of the whole run
  on this device, the disk it takes against the space free, and on a cluster the submissions
  each training job needs at its ``resources.train.runtime``.

One table, on screen and in a file; each blocker also on a line of its own; exit status 1 when
anything blocks.
"""

from __future__ import annotations

import logging
import math
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ndmha.config import check_weights
from ndmha.errors import ConfigError, DataError
from ndmha.study import Study

log = logging.getLogger("ndmha")

OK, WARN, BLOCK = "ok", "warn", "BLOCK"
#: masks whose median hole ratio is above this are taken for inverted: inpainting masks cover
#: less than half the image (QD-IMD's up to about 60 %, the NVIDIA set's up to 60 %, the
#: demo's 5-60 %), so a median above one half means the holes are the other colour
INVERTED_MEDIAN = 0.5
#: masks and images whose pixels the data check reads in full (headers are read for all)
SAMPLE = 64


@dataclass
class Check:
    area: str
    verdict: str
    detail: str


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)
    projection: list[dict[str, Any]] = field(default_factory=list)

    def add(self, area: str, verdict: str, detail: str) -> None:
        self.checks.append(Check(area, verdict, detail))
        (log.warning if verdict != OK else log.info)("preflight %s: %s: %s", area, verdict, detail)

    @property
    def blockers(self) -> list[Check]:
        return [c for c in self.checks if c.verdict == BLOCK]

    def markdown(self, title: str) -> str:
        lines = [f"# Preflight: {title}", "", "| check | verdict | detail |", "|---|---|---|"]
        lines += [f"| {c.area} | {c.verdict} | {c.detail.replace('|', '/')} |"
                  for c in self.checks]
        if self.projection:
            columns = list(self.projection[0])
            lines += ["", "## Projection on this device", "",
                      "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
            lines += ["| " + " | ".join(str(row[c]) for c in columns) + " |"
                      for row in self.projection]
        verdict = (f"{len(self.blockers)} blocker(s): the run would fail" if self.blockers
                   else "nothing blocks")
        return "\n".join(lines + ["", f"**{verdict}.**", ""])


# -- the data --------------------------------------------------------------------------------

def source_folders(study: Study, scratch: Path) -> tuple[Path, Path]:
    """Where the source images and masks are; the demo's are drawn into ``scratch``."""
    images, masks = study.source_folders(scratch / "demo")
    if study.data.source == "demo":
        from ndmha.data.demo import make_demo_dataset

        make_demo_dataset(images, masks, **study.demo_arguments)
    if study.pack:  # its masks drawn here, as the workflow's pack rule does
        from ndmha.data.packs import build

        build(out=scratch / "pack", **study.pack_arguments)
        masks = scratch / "pack" / "masks"
    return images, masks


def header_sizes(paths: list[Path], what: str = "headers"
                 ) -> tuple[dict[tuple[int, int], int], Path | None, str]:
    """Each file's (width, height) from its header (a fraction of a millisecond a file: seconds
    for 30,000), counted; the first unreadable file and why."""
    import sys

    from PIL import Image
    from tqdm import tqdm

    sizes: dict[tuple[int, int], int] = {}
    for path in tqdm(paths, desc=f"preflight: {what}", mininterval=5.0, file=sys.stderr,
                     leave=False):
        try:
            with Image.open(path) as image:
                sizes[image.size] = sizes.get(image.size, 0) + 1
        except (OSError, ValueError) as error:
            return sizes, path, str(error)
    return sizes, None, ""


def describe_sizes(sizes: dict[tuple[int, int], int]) -> str:
    common = sorted(sizes.items(), key=lambda kv: -kv[1])[:3]
    text = ", ".join(f"{n:,} at {w}x{h}" for (w, h), n in common)
    return text + (f", {len(sizes) - 3} other sizes" if len(sizes) > 3 else "")


def check_data(study: Study, scratch: Path, report: Report) -> Any:
    """The plan of the whole run (its sources.csv, in ``scratch``), checked; None when the data
    cannot make one."""
    import pandas as pd

    from ndmha.data.masks import to_holes
    from ndmha.data.sources import plan_sources
    from ndmha.io import read_image

    data = study.data
    images_dir, masks_dir = source_folders(study, scratch)
    try:
        plan = plan_sources(scratch / "sources.csv", images_dir=images_dir, masks_dir=masks_dir,
                            **study.plan_arguments)
    except (DataError, ConfigError) as error:
        report.add("data: counts", BLOCK, str(error))
        return None
    report.add("data: counts", OK, f"{len(plan):,} images and masks planned (data.n_images "
                                   f"{data.n_images:,}), ids unique")
    base = (scratch / "sources.csv").resolve().parent
    size = data.image_size
    for column, what in (("image", "images"), ("mask", "masks")):
        paths = list(dict.fromkeys(base / p for p in plan[column]))
        sizes, bad, why = header_sizes(paths, what)
        if bad is not None:
            report.add(f"data: {what}", BLOCK, f"{bad}: unreadable ({why})")
            continue
        small = sum(n for (w, h), n in sizes.items() if min(w, h) < size)
        verdict = WARN if small else OK
        note = f"; {small:,} smaller than data.image_size {size} (upsampled)" if small else ""
        report.add(f"data: {what}", verdict,
                   f"{len(paths):,} readable: {describe_sizes(sizes)}{note}")
    # polarity and hole ratios, on masks spread over the plan
    picks = np.unique(np.linspace(0, len(plan) - 1, min(SAMPLE, len(plan))).astype(int))
    ratios = []
    for rank in picks:
        path = base / plan["mask"].iloc[rank]
        try:
            ratios.append(float(to_holes(read_image(path, 0), data.mask_hole).mean() / 255))
        except DataError as error:
            report.add("data: masks", BLOCK, str(error))
            return None
    median = statistics.median(ratios)
    detail = (f"hole ratio on {len(ratios)} sampled masks: median {median:.0%}, "
              f"{min(ratios):.0%} to {max(ratios):.0%} (data.mask_hole: {data.mask_hole})")
    if median > INVERTED_MEDIAN:
        other = "black" if data.mask_hole == "white" else "white"
        report.add("data: mask polarity", BLOCK, f"{detail}: the masks look inverted, holes "
                   f"cover most of each image; set data.mask_hole: {other}")
    else:
        report.add("data: mask polarity", OK, detail)
    return pd.read_csv(scratch / "sources.csv", dtype={"id": str})


def prepare_sample(study: Study, plan: Any, scratch: Path, counts: dict[str, int]
                   ) -> tuple[Path, dict[str, float]]:
    """The data chain (JPG, masks, overlay, split) on the plan's first images: a manifest with
    ``counts`` train / val / test images, and the seconds and bytes per image it took."""
    from ndmha.data.prepare import convert_listed, overlay_masks, prepare_listed
    from ndmha.data.split import make_split

    n = sum(counts.values())
    rows = plan.head(n)
    if len(rows) < n:
        raise DataError(f"the dev run needs {n} images, the data plans {len(plan)}")
    base, out = (scratch / "sources.csv").resolve().parent, scratch / "sample"
    began = time.perf_counter()
    convert_listed([(i, base / p) for i, p in zip(rows["id"], rows["image"])], out / "images",
                   **study.convert_arguments)
    prepare_listed([(r, base / p) for r, p in enumerate(rows["mask"])], n, out / "masks",
                   **study.mask_arguments)
    overlay_masks(out / "images", out / "masks", out / "corrupted", out / "pairs.csv")
    seconds = (time.perf_counter() - began) / n
    make_split(out / "pairs.csv", out / "manifest.csv", "paper", seed=0, test=counts["test"],
               val=counts["val"])
    sizes = {what: sum(f.stat().st_size for f in (out / what).iterdir()) / n
             for what in ("images", "masks", "corrupted")}
    return out / "manifest.csv", {"prepare_seconds": seconds, **sizes}


# -- the device and the dev run ----------------------------------------------------------------

def check_device(study: Study, report: Report) -> Any:
    import torch

    from ndmha.devices import cpu_threads, resolve_device
    from ndmha.models.layers import AUTO, resolve_backend

    try:
        device = resolve_device(study.device)
    except (RuntimeError, ValueError) as error:
        report.add("device", BLOCK, f"train.device: {error}")
        return None
    backend = resolve_backend(AUTO, device)  # the process's (run_preflight set it), or auto's
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        bf16 = "bf16 supported" if torch.cuda.is_bf16_supported() else "no bf16"
        report.add("device", OK, f"cuda: {props.name}, {props.total_memory / 2**30:.0f} GiB, "
                   f"{bf16}; deformable conv: {backend}")
    else:
        cuda = "no CUDA device visible" if not torch.cuda.is_available() else \
            f"train.device {study.device} (a CUDA device is visible)"
        bf16 = torch.ops.mkldnn._is_mkldnn_bf16_supported() if hasattr(
            torch.ops.mkldnn, "_is_mkldnn_bf16_supported") else False
        long_run = study.train["epochs"] > 10
        report.add("device", WARN if long_run else OK,
                   f"cpu ({cpu_threads()}; {cuda}"
                   f"{'; a long run on a CPU: see the projection' if long_run else ''}); "
                   f"{'bf16 in hardware' if bf16 else 'no bf16 in hardware'}; "
                   f"deformable conv: {backend}")
    return device


def dev_run(study: Study, experiment: Any, manifest: Path, scratch: Path, steps: int,
            device: Any) -> dict[str, float]:
    """Train ``experiment`` for ``steps`` steps on the sample with its configured settings (one
    validation batch: the sample's), predict and score the sample's test images; then time
    ``steps`` more steps on a real batch for the projection. Seconds and bytes measured."""
    from ndmha.evaluate import predict, score
    from ndmha.train import TrainSettings, Trainer, train

    folder = scratch / "runs" / experiment.name
    settings = study.train_settings(experiment.name)
    settings.update(epochs=1, max_steps=steps, tensorboard=False, checkpoint_minutes=0.0)
    s = TrainSettings(**settings)
    train(manifest, folder / "model.pt", folder / "train_log.csv", folder / "last.pt", s)
    began = time.perf_counter()
    predict(manifest, folder / "model.pt", folder / "pred", device=str(device),
            experiment=experiment.name)
    predicted = time.perf_counter() - began
    began = time.perf_counter()
    score(manifest, folder / "pred", folder / "per_image.csv", folder / "buckets.csv",
          folder / "summary.json", lpips=study.evaluation.lpips, fid=study.evaluation.fid,
          device=str(device))
    scored = time.perf_counter() - began
    tests = sum(1 for _ in (folder / "pred" / "composite").glob("*.png"))
    # the steady-state step, after a warm-up step, on a batch of the sample's training images
    times = Trainer(s, manifest, folder / "timing.pt").time_steps(manifest, max(2, steps))
    checkpoint = folder / "last.pt"
    return {"step_seconds": statistics.median(times),
            "predict_seconds": predicted / tests, "score_seconds": scored / tests,
            "model_bytes": (folder / "model.pt").stat().st_size,
            "checkpoint_bytes": checkpoint.stat().st_size if checkpoint.exists()
            else 3 * (folder / "model.pt").stat().st_size,
            "prediction_bytes": sum(f.stat().st_size for f in (folder / "pred").rglob("*.png"))
            / tests}


def floor_run(study: Study, experiment: Any, manifest: Path, scratch: Path
              ) -> dict[str, float]:
    """A training-free method on the sample's test images, predicted and scored: seconds and
    bytes per image."""
    from ndmha.evaluate import predict_training_free, score

    folder = scratch / "runs" / experiment.name
    began = time.perf_counter()
    predict_training_free(manifest, experiment.name, experiment.architecture,
                          experiment.options, folder / "pred")
    predicted = time.perf_counter() - began
    score(manifest, folder / "pred", folder / "per_image.csv", folder / "buckets.csv",
          folder / "summary.json", lpips=study.evaluation.lpips, fid=study.evaluation.fid,
          device="cpu")
    tests = sum(1 for _ in (folder / "pred" / "composite").glob("*.png"))
    return {"predict_seconds": predicted / tests,
            "score_seconds": (time.perf_counter() - began - predicted) / tests,
            "prediction_bytes": sum(f.stat().st_size for f in (folder / "pred").rglob("*.png"))
            / tests}


# -- the projection ------------------------------------------------------------------------------

def hours(seconds: float) -> str:
    return f"{seconds / 3600:,.1f} h" if seconds >= 360 else f"{seconds / 60:,.1f} min"


def gigabytes(count: float) -> str:
    return f"{count / 1e9:,.1f} GB" if count >= 1e8 else f"{count / 1e6:,.1f} MB"


def split_counts(study: Study, ids: list[str]) -> dict[str, int]:
    """Train / val / test images of the whole run (``ids``: the plan's), as the split rule
    will deal them."""
    from ndmha.data.split import celeba_splits, listed_ids, split_sizes

    n, split = study.data.n_images, study.split
    if split.scheme == "celeba":
        labels = celeba_splits(ids, split.celeba["image_list"], split.celeba["partition"])
        return {k: labels.count(k) for k in ("train", "val", "test")}
    if split.scheme == "ids":
        labels = listed_ids(ids, split.test_ids)
        return {k: labels.count(k) for k in ("train", "val", "test")}
    if split.scheme == "lists":
        test, val = split.test or 0, split.val
        return {"train": n - test - val, "val": val, "test": test}
    sizes = split_sizes(n, split.scheme, split.test, split.val)
    return {k: int(sizes.get(k, 0)) for k in ("train", "val", "test")}


def project(study: Study, measured: dict[str, dict], data: dict[str, float], report: Report,
            device: Any, ids: list[str]) -> float:
    """The projection rows (per experiment: its runs, steps, step time, wall time, disk), the
    cluster's submissions; returns the bytes the whole run needs."""
    counts = split_counts(study, ids)
    n = study.data.n_images
    threads = study.threads("prepare") or 1
    prep = data["prepare_seconds"] * n / threads
    need = n * (data["images"] + data["masks"] + data["corrupted"])
    total = prep
    report.projection.append({"experiment": "data preparation", "runs": 1,
                              "steps a run": "", "s a step": "",
                              "wall time": hours(prep), "disk": gigabytes(need)})
    cluster = study.cluster
    runtime = study.resources["train"].get("runtime")
    usable = (runtime - cluster.signal_minutes) if runtime else None
    allowed = cluster.submissions
    groups: dict[str, list[Any]] = {}
    for e in study.experiments.values():
        groups.setdefault(e.group, []).append(e)
    for group, runs in groups.items():
        first = runs[0]
        m = measured.get(first.name)
        if m is None:
            continue
        if first.trained:
            s = study.run_train(first.name)
            images = counts["train"] + (counts["val"] if "val" in s.get("train_splits", [])
                                        else 0)
            images = min(images, s.get("max_train_images") or images)
            steps = s.get("max_steps") or s["epochs"] * math.ceil(images / s["batch_size"])
            val = counts["val"] or counts["test"]
            train_s = steps * m["step_seconds"] + s["epochs"] * val * m["predict_seconds"]
            disk = m["model_bytes"] + 2 * m["checkpoint_bytes"]  # last.pt and last.pt.prev
        else:
            steps, train_s, disk = "", 0.0, 0.0
        test_s = counts["test"] * (m["predict_seconds"] + m.get("score_seconds", 0.0))
        disk += counts["test"] * m["prediction_bytes"]
        row = {"experiment": group, "runs": len(runs),
               "steps a run": f"{steps:,}" if steps != "" else "",
               "s a step": f"{m['step_seconds']:.3f}" if first.trained else "",
               "wall time": hours(len(runs) * (train_s + test_s)),
               "disk": gigabytes(len(runs) * disk)}
        total += len(runs) * (train_s + test_s)
        need += len(runs) * disk
        if first.trained and usable and cluster.partition:
            submissions = math.ceil(train_s / 60 / usable)
            row["submissions"] = f"{submissions} of {allowed}"
            if submissions > allowed:
                verdict = BLOCK if device is not None and device.type == "cuda" else WARN
                where = "" if verdict == BLOCK else " (measured on this CPU: rerun on the GPU)"
                report.add(f"cluster: {group}", verdict,
                           f"{hours(train_s)} of training a run needs {submissions} "
                           f"submissions of resources.train.runtime {runtime} min "
                           f"({usable} usable), cluster.train_submissions allows {allowed}: "
                           f"raise either{where}")
        report.projection.append(row)
    for row in report.projection:  # one set of columns
        row.setdefault("submissions", "")
    report.projection.append({"experiment": "**the whole run**", "runs": sum(
        len(r) for r in groups.values()), "steps a run": "", "s a step": "",
        "wall time": f"**{hours(total)}**", "disk": f"**{gigabytes(need)}**", "submissions": ""})
    return need


def free_space(folder: Path) -> int:
    return shutil.disk_usage(folder).free


def check_disk(study: Study, need: float, report: Report) -> None:
    folder = study.results_dir.resolve()
    while not folder.exists():
        folder = folder.parent
    free = free_space(folder)
    detail = (f"{gigabytes(free)} free at {folder} for results_dir, the run needs about "
              f"{gigabytes(need)}")
    report.add("disk", BLOCK if free < need else WARN if free < 1.5 * need else OK, detail)


# -- the whole preflight ---------------------------------------------------------------------------

def run_preflight(study: Study, scratch: Path | None = None, steps: int = 3,
                  test_images: int = 4, dev: bool = True) -> Report:
    """Every check on a resolved config (:func:`ndmha.study.load`: the schema and the config's
    own checks passed); ``scratch`` (default a temporary folder, removed afterwards) holds the
    plan, the sample and the dev runs."""
    from ndmha.models.layers import set_backend

    report = Report()
    experiments = study.experiments
    try:
        set_backend(study.backend)  # once, for every dev run of this process
    except ConfigError as error:
        report.add("config", BLOCK, str(error))
        return report
    groups = {e.group for e in experiments.values()}
    report.add("config", OK, f"{len(experiments)} runs of {len(groups)} experiments, "
               f"results_dir {study.results_dir}")
    try:
        found = check_weights(study.config, experiments)
        missing = [f for f in found if not f.found and not f.off]
        report.add("weights", WARN if missing else OK,
                   "; ".join(f"{f.key}: {'off' if f.off else f.path if f.found else f.problem}"
                             for f in found))
    except ConfigError as error:
        report.add("weights", BLOCK, str(error))
    own = scratch is None
    scratch = Path(tempfile.mkdtemp(prefix="ndmha-preflight-")) if own else Path(scratch)
    try:
        plan = check_data(study, scratch, report)
        device = check_device(study, report)
        if plan is None or device is None or not dev:
            return report
        trained = [e for e in experiments.values() if e.trained]
        batch = max([study.run_train(e.name)["batch_size"] for e in trained] or [1])
        counts = {"train": batch, "val": batch, "test": test_images}
        try:
            manifest, data = prepare_sample(study, plan, scratch, counts)
        except (DataError, ConfigError) as error:
            report.add("dev run: data", BLOCK, str(error))
            return report
        measured: dict[str, dict] = {}
        firsts = {}
        for e in experiments.values():
            firsts.setdefault(e.group, e)
        for group, e in firsts.items():
            began = time.perf_counter()
            try:
                if e.trained:
                    measured[e.name] = dev_run(study, e, manifest, scratch, steps, device)
                elif e.kind == "training-free":
                    measured[e.name] = floor_run(study, e, manifest, scratch)
                else:
                    continue  # imported weights and outside predictions: checked by the config
            except Exception as error:  # noqa: BLE001 (any failure here is the finding)
                report.add(f"dev run: {group}", BLOCK, f"{type(error).__name__}: {error}")
                continue
            what = (f"{steps} training steps at batch {batch}, one validation batch, "
                    if e.trained else "")
            report.add(f"dev run: {group}", OK, f"{what}prediction and metrics on "
                       f"{test_images} test images in {time.perf_counter() - began:.1f} s")
        need = project(study, measured, data, report, device, list(plan["id"]))
        check_disk(study, need, report)
        return report
    finally:
        if own:
            shutil.rmtree(scratch, ignore_errors=True)


def blocker_lines(report: Report) -> list[str]:
    return [f"preflight blocker: {c.area}: {c.detail}" for c in report.blockers]

