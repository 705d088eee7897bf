"""Scale rehearsal: N faces at 1024x1024 and N QD-IMD-sized masks (512x512) through the real
workflow (convert, masks, overlay, split, a baseline trained for a capped number of steps, predict
and metrics on the test split at 256 px, tables, figures, the HTML report), at several N, with
every job's wall time and peak RSS (Snakemake's ``benchmark:`` files) and the files and bytes each
stage wrote, and the growth of each against N.

    python bench/scale.py --sizes 1000 3000 10000 30000        # the rehearsal (~1 h on 2 cores)
    python bench/scale.py --sizes 60 --pool-faces 8 --pool-masks 8 --out /tmp/scale  # CI-sized
    python bench/scale.py --sizes 30000 --data-only --shards 4 --out /tmp/s4  # sharded data rules

The faces are procedural (ndmha.data.demo.draw_face at 1024 px: 1.4-1.5 MB PNGs, CelebA-HQ's
size) and the masks QD-IMD-like strokes at 512 px; to keep disk and time in bounds, ``--pool-faces``
distinct faces and ``--pool-masks`` distinct masks are drawn once and hard-linked under N distinct
names. Every file is still decoded by every rule (decoding dominates the data rules); what the
pool hides is the disk: repeated files may be read from the page cache.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from _common import machine

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ndmha.data.demo import draw_face, draw_mask  # noqa: E402
from ndmha.io import map_parallel, write_image  # noqa: E402

#: what each job wrote (paths under the results folder)
OUTPUTS = {"sources": ["data/sources.csv"],  # the shards' own folders are gone after the gather
           "gather": ["data/images", "data/masks", "data/corrupted", "data/pairs.csv"],
           "convert": ["data/images"], "masks": ["data/masks"],  # a run before the shards
           "overlay": ["data/corrupted", "data/pairs.csv"], "split": ["data/manifest.csv"],
           "train": ["models", "checkpoints"], "predict": ["predictions"],
           "metrics": ["metrics"], "tables": ["tables"], "data_figure": ["figures/data_samples.png"],
           "training_curves": ["figures/baseline/curves.png"],
           "prediction_grid": ["figures/baseline/predictions.png"],
           "comparison_figures": ["figures/comparison.png", "figures/metrics_vs_hole.png",
                                  "figures/experiments_psnr.png"],
           "comparison_forest": ["figures/comparisons.png"], "report": ["report.html"]}


def draw_pool(folder: Path, n_faces: int, n_masks: int, face_size: int, mask_size: int,
              threads: int) -> tuple[list[Path], list[Path]]:
    """The distinct faces and masks, drawn once (kept between runs)."""
    faces = [folder / "faces" / f"{i:05d}.png" for i in range(n_faces)]
    masks = [folder / "masks" / f"{i:05d}.png" for i in range(n_masks)]

    def face(i: int) -> None:
        if not faces[i].exists():
            write_image(faces[i], draw_face(face_size, seed=7, index=i))

    def mask(i: int) -> None:
        if not masks[i].exists():
            write_image(masks[i], draw_mask(mask_size, seed=7, index=i))

    map_parallel(face, list(range(n_faces)), threads, f"pool: {face_size}px faces")
    map_parallel(mask, list(range(n_masks)), threads, f"pool: {mask_size}px masks")
    return faces, masks


def link_dataset(folder: Path, n: int, faces: list[Path], masks: list[Path]) -> None:
    """N distinctly named faces and masks, hard links into the pool."""
    for name, pool in (("images", faces), ("masks", masks)):
        target = folder / name
        target.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            link = target / f"{i:05d}.png"
            if not link.exists():
                os.link(pool[i % len(pool)], link)


def config(folder: Path, n: int, args: argparse.Namespace) -> dict:
    """The rehearsal's overlay of the demo config: its data, split, network and budget."""
    test = 3000 if n == 30000 else max(2, n // 10)  # the paper's 27,000 / 3,000 at 30k
    return {
        "extends": "config.yaml", "results_dir": str(folder / "results"), "smoke_test": False,
        "data": {"source": "folders", "name": f"scale rehearsal, {n} procedural faces",
                 "images_dir": str(folder / "images"), "masks_dir": str(folder / "masks"),
                 "n_images": n, "image_size": args.image_size, "shards": args.shards},
        "split": {"test": test}, "models": ["baseline"],
        "train": {"epochs": 1, "max_steps": args.max_steps, "batch_size": args.batch,
                  "device": "cpu", "num_workers": args.threads, "tensorboard": False},
        "resources": {stage: {"threads": args.threads} for stage in ("prepare", "train",
                                                                     "evaluate")},
    }


def size_of(paths: list[Path]) -> tuple[int, int]:
    """Files and bytes under ``paths`` (files or folders)."""
    files = total = 0
    for path in paths:
        if path.is_file():
            files, total = files + 1, total + path.stat().st_size
        elif path.is_dir():
            for root, _, names in os.walk(path):
                for name in names:
                    files += 1
                    total += os.path.getsize(os.path.join(root, name))
    return files, total


def rehearse(folder: Path, n: int, args: argparse.Namespace) -> list[dict]:
    """Run the workflow at N from scratch (a previous run's results are removed); one row per
    job: seconds, peak RSS, files and bytes written."""
    for previous in (folder / "results", folder / ".snakemake"):
        shutil.rmtree(previous, ignore_errors=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config(folder, n, args)))
    snakemake = [sys.executable, "-m", "snakemake", "-s", str(args.snakefile), "--directory",
                 str(folder), "--configfile", str(folder / "config.yaml")]
    began = time.perf_counter()
    done = subprocess.run([*snakemake, "--cores", str(args.threads),
                           *(["--until", "split"] if args.data_only else [])],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"N={n}: the workflow failed:\n{(done.stdout + done.stderr)[-3000:]}")
    workflow_s = time.perf_counter() - began
    rows = []
    for tsv in sorted((folder / "results" / "benchmarks").glob("*.tsv")):
        job = tsv.stem
        stage = re.sub(r"_\d+$", "", job.removesuffix("_baseline"))  # convert_3: shard 3
        bench = pd.read_csv(tsv, sep="\t").iloc[-1]
        files, total = size_of([folder / "results" / p for p in OUTPUTS.get(stage, [])])
        rows.append({"n": n, "job": job, "seconds": float(bench["s"]),
                     "peak_rss_mb": float(bench["max_rss"]), "files": files, "bytes": total})
    if not args.data_only:
        report = folder / "results" / "report.html"
        began = time.perf_counter()
        subprocess.run([*snakemake, "--report", str(report)], check=True, capture_output=True)
        files, total = size_of([report])
        rows.append({"n": n, "job": "report", "seconds": time.perf_counter() - began,
                     "peak_rss_mb": float("nan"), "files": files, "bytes": total})
    rows.append({"n": n, "job": "workflow (wall)", "seconds": workflow_s,
                 "peak_rss_mb": float("nan"), "files": float("nan"), "bytes": float("nan")})
    return rows


def growth(table: pd.DataFrame) -> pd.DataFrame:
    """Per job: the exponent k of time ~ N^k (least squares on log-log over the sizes), and the
    peak RSS at the smallest and the largest N."""
    rows = []
    for job, group in table.groupby("job", sort=False):
        group = group.sort_values("n")
        ok = group["seconds"] > 0
        k = (float(np.polyfit(np.log(group["n"][ok]), np.log(group["seconds"][ok]), 1)[0])
             if ok.sum() >= 2 else float("nan"))
        rows.append({"job": job, "time exponent k (t ~ N^k)": k,
                     "seconds at smallest N": group["seconds"].iloc[0],
                     "seconds at largest N": group["seconds"].iloc[-1],
                     "peak RSS MB, smallest N": group["peak_rss_mb"].iloc[0],
                     "peak RSS MB, largest N": group["peak_rss_mb"].iloc[-1]})
    return pd.DataFrame(rows)


def plot(table: pd.DataFrame, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    for job, group in table.groupby("job", sort=False):
        group = group.sort_values("n")
        axes[0].loglog(group["n"], group["seconds"], "o-", ms=3, label=job)
        if group["peak_rss_mb"].notna().any():
            axes[1].semilogx(group["n"], group["peak_rss_mb"], "o-", ms=3, label=job)
    sizes = sorted(table["n"].unique())
    if len(sizes) > 1:  # a linear reference through the smallest workflow time
        first = table[(table["job"] == "workflow (wall)") & (table["n"] == sizes[0])]["seconds"]
        if len(first):
            axes[0].loglog(sizes, [first.iloc[0] * n / sizes[0] for n in sizes], "k:",
                           label="linear in N")
    axes[0].set(xlabel="N images", ylabel="seconds", title="Wall time per job")
    axes[1].set(xlabel="N images", ylabel="peak RSS (MB)", title="Peak memory per job")
    for ax in axes:
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 3000, 10000, 30000])
    parser.add_argument("--pool-faces", type=int, default=500)
    parser.add_argument("--pool-masks", type=int, default=3000)
    parser.add_argument("--face-size", type=int, default=1024)
    parser.add_argument("--mask-size", type=int, default=512)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--max-steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/ndmha-scale"),
                        help="where the data and the runs go (tens of GB for 30k)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs",
                        help="where scale.csv, scale_growth.csv and scale.png go")
    parser.add_argument("--shards", type=int, default=1,
                        help="data.shards: the conversion, mask and overlay jobs per stage")
    parser.add_argument("--data-only", action="store_true",
                        help="only the data rules (--until split), no training or report")
    parser.add_argument("--snakefile", type=Path, default=ROOT / "Snakefile",
                        help="another checkout's Snakefile (e.g. a commit before a change, "
                             "from git worktree) to time its data rules the same way")
    parser.add_argument("--merge", action="store_true",
                        help="keep the rows of other sizes already in OUT/scale.csv (rerun some "
                             "sizes, e.g. after a disturbed measurement, and refit all of them)")
    args = parser.parse_args()
    faces, masks = draw_pool(args.workdir / "pool", args.pool_faces, args.pool_masks,
                             args.face_size, args.mask_size, args.threads)
    rows = []
    for n in args.sizes:
        folder = args.workdir / f"n{n}"
        link_dataset(folder, n, faces, masks)
        rows += rehearse(folder, n, args)
        print(json.dumps(rows[-1]), flush=True)
    table = pd.DataFrame(rows)
    previous = args.out / "scale.csv"
    if args.merge and previous.exists():
        kept = pd.read_csv(previous)
        table = pd.concat([kept[~kept["n"].isin(args.sizes)], table], ignore_index=True)
        table = table.sort_values("n", kind="stable", ignore_index=True)
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "scale.csv", index=False, float_format="%.4g")
    fits = growth(table)
    fits.to_csv(args.out / "scale_growth.csv", index=False, float_format="%.4g")
    plot(table, args.out / "scale.png")
    print(f"\nScale rehearsal on {machine(__import__('torch').device('cpu'))}, sizes "
          f"{sorted(table['n'].unique())}")
    print(table.to_markdown(index=False, floatfmt=".4g"))
    print()
    print(fits.to_markdown(index=False, floatfmt=".3g"))


if __name__ == "__main__":
    main()
