"""The 8,000-step study on one lent GPU: every (experiment, seed) of configs/study.yaml that is
asked for, trained side by side on the one device, then its test split scored once.

    # on the GPU machine (device tool: carry results/study/data; timeout_s 560):
    python3 study/gpu_study.py --out "$OUT/study" --deadline-s 500
    # the same code on the CPU, a few steps (tests/test_workflow.py runs it on a tiny config)
    python study/gpu_study.py --out /tmp/gs --max-steps 4 --seeds 0 --device cpu --parallel 2

The GPU machine has no Snakemake, so this is the workflow's train → predict → metrics chain for
those runs, through the same package functions and the same resolved config (``ndmha.study``,
which needs jsonschema: carry its wheels where it is missing): the same data (the study's
prepared folder, carried to the machine as it is: the manifest's paths are relative), masks,
split, batch, learning rate and cosine decay over each experiment's own budget. Each run trains in its own process
(``python -m ndmha train``, as the train rule's torchrun path does), ``--parallel`` at a time.

Time limits: at ``--deadline-s`` every run still training gets SIGTERM, finishes its step, writes
its mid-epoch checkpoint and exits 75 (ndmha.train); the work folder (``--work``, git-ignored)
stays on the machine, and the same command again resumes every unfinished run where it stopped.
The crossing, from the curves of one device:
``python -m ndmha crossing --a OUT/ndmha_8000.seed*/train_log.csv --b OUT/baseline.seed*/train_log.csv``.
Each call writes into ``--out``: ``runs.csv`` (one row a run: the docs/study_runs.csv columns plus
wall time, device, finished or not and its step), every run's ``train_log.csv`` (the validation
curve every epoch: 250 steps at batch 8) and ``summary.json``, and ``gpu_study.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ndmha.evaluate import predict, score  # noqa: E402
from ndmha.models.layers import set_backend  # noqa: E402
from ndmha.study import Study, load  # noqa: E402

#: the study_runs.csv columns, then what a GPU row adds
COLUMNS = ["experiment", "seed", "kind", "test_images", "psnr", "ssim", "l1", "steps", "machine",
           "date", "finished", "train_s", "device"]


def study_of(config: str, experiments: list[str], seeds: list[int]) -> Study:
    """The config with the seeded runs asked for (``<experiment>.seed<s>``), resolved."""
    study = load([config], [f"seeds={seeds}", f"only={experiments}"])
    runs = study.experiments
    untrained = sorted({e.group for e in runs.values() if not e.trained})
    if untrained:
        raise SystemExit(f"not trained experiments cannot run here: {untrained}")
    return study


def launch(run: object, study: Study, manifest: Path, work: Path, device: str,
           max_steps: int | None) -> subprocess.Popen:
    settings = {**study.train_settings(run.name), "device": device, "tensorboard": False,
                "num_workers": min(2, os.cpu_count() or 1)}
    if max_steps:
        settings["max_steps"] = max_steps
    folder = work / run.name
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "train.log", "a") as log:  # the child holds its own copy of the file
        return subprocess.Popen(
            [sys.executable, "-m", "ndmha", "train", "--manifest", str(manifest), "--model-out",
             str(folder / "model.pt"), "--log-csv", str(folder / "train_log.csv"),
             "--checkpoint", str(folder / "last.pt"), "--settings", json.dumps(settings)],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT)})


def train_all(study: Study, manifest: Path, work: Path, device: str, parallel: int,
              deadline: float, max_steps: int | None) -> dict[str, float]:
    """Train every run not yet finished, ``parallel`` at a time; SIGTERM at the deadline."""
    runs = study.experiments
    pending = [name for name in runs if not (work / name / "model.pt").exists()]
    active: dict[str, tuple[subprocess.Popen, float]] = {}
    seconds: dict[str, float] = {}
    stopping = False
    while pending or active:
        while pending and len(active) < parallel and not stopping:
            name = pending.pop(0)
            active[name] = (launch(runs[name], study, manifest, work, device, max_steps),
                            time.perf_counter())
            print(f"started {name}", flush=True)
        time.sleep(1.0)
        if not stopping and time.perf_counter() > deadline:
            stopping = True
            pending.clear()
            for proc, _ in active.values():
                proc.send_signal(signal.SIGTERM)  # finish the step, checkpoint, exit 75
            print("deadline: stopping every run at its next step", flush=True)
        for name, (proc, began) in list(active.items()):
            if proc.poll() is not None:
                seconds[name] = time.perf_counter() - began
                print(f"{name}: exit {proc.returncode} after {seconds[name]:.0f} s", flush=True)
                del active[name]
    return seconds


def score_run(name: str, run: object, study: Study, manifest: Path, work: Path, out: Path,
              device: str, seconds: dict[str, float], machine: str) -> dict:
    folder, row_out = work / name, out / name
    row_out.mkdir(parents=True, exist_ok=True)
    history = folder / "train_log.csv"
    if history.exists():
        shutil.copy(history, row_out / "train_log.csv")
    steps = int(pd.read_csv(history)["steps"].iloc[-1]) if history.exists() else 0
    row = {"experiment": run.group, "seed": run.seed, "kind": run.kind, "steps": steps,
           "machine": machine, "date": dt.date.today().isoformat(),
           "finished": (folder / "model.pt").exists(), "train_s": seconds.get(name),
           "device": device}
    if not row["finished"]:
        return row
    summary_path = folder / "summary.json"
    if not summary_path.exists():
        predict(manifest, folder / "model.pt", folder / "pred", device=device, experiment=name)
        score(manifest, folder / "pred", folder / "per_image.csv", folder / "buckets.csv",
              summary_path, **{**study.metric_arguments, "device": device})
    summary = json.loads(summary_path.read_text())
    for kept in ("summary.json", "per_image.csv", "buckets.csv"):
        shutil.copy(folder / kept, row_out / kept)
    return {**row, "test_images": summary["images"], "psnr": round(summary["psnr"], 3),
            "ssim": round(summary["ssim"], 4), "l1": round(summary["l1"], 5)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="where runs.csv and the curves go")
    parser.add_argument("--config", default=str(ROOT / "configs" / "study.yaml"))
    parser.add_argument("--data", default=None,
                        help="the prepared data folder with manifest.csv (default: the "
                             "config's results_dir/data)")
    # the U-Net's 8,000 steps again on the same device: curves of one device are compared
    parser.add_argument("--experiments", nargs="+",
                        default=["baseline", "ndmha_8000", "ndmha_released_8000"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--work", default=None,
                        help="checkpoints and models (default: results/gpu_study, git-ignored; "
                             "kept between calls on a warm machine)")
    parser.add_argument("--device", default=None, help="default: cuda when present")
    parser.add_argument("--parallel", type=int, default=9, help="runs training at once")
    parser.add_argument("--deadline-s", type=float, default=1e9,
                        help="stop training (checkpointed) this long after the start")
    parser.add_argument("--max-steps", type=int, default=None, help="a trial at a few steps")
    args = parser.parse_args()
    began = time.perf_counter()
    study = study_of(args.config, args.experiments, args.seeds)  # laid over config.yaml
    set_backend(study.backend)  # this process's, and its training children's
    data = Path(args.data or study.results_dir / "data")
    manifest = (data / "manifest.csv").resolve()
    if not manifest.exists():
        raise SystemExit(f"{manifest}: no prepared data (run the study's data rules, or carry "
                         "the folder to this machine)")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    machine = (torch.cuda.get_device_name() if device.startswith("cuda") else "CPU") + \
        f", torch {torch.__version__}"
    work = Path(args.work or ROOT / "results" / "gpu_study")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = study.experiments
    print(f"{len(runs)} runs on {machine}: {', '.join(runs)}", flush=True)
    seconds = train_all(study, manifest, work, device, args.parallel,
                        began + args.deadline_s, args.max_steps)
    rows = [score_run(name, run, study, manifest, work, out, device, seconds, machine)
            for name, run in runs.items()]
    table = pd.DataFrame(rows, columns=COLUMNS)
    table.to_csv(out / "runs.csv", index=False)
    (out / "gpu_study.md").write_text(
        f"# The study on {machine}\n\n{len(runs)} runs, {time.perf_counter() - began:.0f} s "
        f"this call\n\n" + table.fillna("").astype(str).to_markdown(index=False) + "\n")
    print(table.to_string(index=False), flush=True)
    sys.exit(0 if table["finished"].all() else 75)


if __name__ == "__main__":
    main()
