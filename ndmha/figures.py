"""The report's figures (matplotlib, PNG): data samples, training curves, prediction grids,
a side-by-side comparison of the experiments, metrics against the hole ratio, and every
experiment's validation PSNR against optimizer steps and against training wall time."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ndmha.data.split import read_manifest  # noqa: E402
from ndmha.io import atomic_path, read_image  # noqa: E402

log = logging.getLogger("ndmha")

CURVES = (("loss", "loss (objective)"), ("psnr", "PSNR (dB)"), ("ssim", "SSIM"), ("l1", "L1"))
BUCKET_METRICS = (("psnr", "PSNR (dB)"), ("ssim", "SSIM"), ("l1", "L1"), ("lpips", "LPIPS"))


def _save(fig: plt.Figure, path: str | Path) -> None:
    """Save a figure atomically and close it."""
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)


def _rgb(path: str | Path) -> np.ndarray:
    return cv2.cvtColor(read_image(path), cv2.COLOR_BGR2RGB)


def fixed_ids(manifest: str | Path, n: int, split: str = "test") -> list[str]:
    """The first ``n`` ids of a split (sorted): the same images in every grid and every run."""
    return sorted(read_manifest(manifest, split)["id"])[:n]


def _grid(rows: list[list[np.ndarray]], titles: list[str], out: str | Path, suptitle: str) -> None:
    fig, axes = plt.subplots(len(rows), len(titles), squeeze=False,
                             figsize=(1.9 * len(titles), 1.9 * len(rows)))
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            ax = axes[r][c]
            ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(titles[c], fontsize=9)
    fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    _save(fig, out)


def data_samples(manifest: str | Path, out: str | Path, n: int = 4) -> None:
    """Ground truth, mask (white = hole) and corrupted input for the first training images."""
    frame = read_manifest(manifest).sort_values("id").head(n)
    rows = [[_rgb(r["image"]), read_image(r["mask"], cv2.IMREAD_GRAYSCALE), _rgb(r["corrupted"])]
            for _, r in frame.iterrows()]
    _grid(rows, ["face (JPG)", "mask (white = hole)", "corrupted input"], out,
          "Data: masks overlaid on faces with cv2.bitwise_and")


def training_curves(history_csv: str | Path, out: str | Path, label: str) -> None:
    """Loss, PSNR, SSIM and L1 per epoch, training against validation."""
    log_ = pd.read_csv(history_csv)
    val_split = log_["val_split"].iloc[-1] if "val_split" in log_ else "val"
    fig, axes = plt.subplots(2, 2, figsize=(9, 6.5))
    for ax, (key, axis_label) in zip(axes.flat, CURVES):
        for prefix, style in (("train", "o-"), ("val", "s--")):
            ax.plot(log_["epoch"], log_[f"{prefix}_{key}"], style,
                    label="training" if prefix == "train" else f"validation ({val_split} split)")
        ax.set_xlabel("epoch")
        ax.set_ylabel(axis_label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(f"{label}: training curves", fontsize=11)
    fig.tight_layout()
    _save(fig, out)


def prediction_grid(manifest: str | Path, predictions: str | Path, out: str | Path, label: str,
                    ids: list[str]) -> None:
    """Masked input | prediction | composite | ground truth for fixed test ids."""
    frame = read_manifest(manifest, "test").set_index("id")
    rows = [[_rgb(frame.loc[i, "corrupted"]), _rgb(Path(predictions) / "raw" / f"{i}.png"),
             _rgb(Path(predictions) / "composite" / f"{i}.png"), _rgb(frame.loc[i, "image"])]
            for i in ids]
    _grid(rows, ["masked input", "prediction", "composite", "ground truth"], out,
          f"{label}: test predictions")


#: the comparison figure's second title line on a smoke test (the demo's 200-step budgets)
SMOKE_TEST_NOTE = ("smoke test: networks at smoke-test budgets, not the study's; "
                   "the study's figures: docs/study.md")


def comparison_grid(manifest: str | Path, predictions: dict[str, str | Path], out: str | Path,
                    ids: list[str], smoke_test: bool = False) -> None:
    """Masked input | each experiment's composite (``predictions``: label -> folder) | ground
    truth, side by side (as the paper's qualitative comparison); on a smoke test the title says
    so."""
    frame = read_manifest(manifest, "test").set_index("id")
    rows = [[_rgb(frame.loc[i, "corrupted"]),
             *(_rgb(Path(p) / "composite" / f"{i}.png") for p in predictions.values()),
             _rgb(frame.loc[i, "image"])] for i in ids]
    _grid(rows, ["masked input", *predictions, "ground truth"], out,
          "Comparison on the same test images" + (f"\n{SMOKE_TEST_NOTE}" if smoke_test else ""))


def metrics_vs_hole(buckets: dict[str, str | Path], out: str | Path) -> None:
    """Each per-image metric by hole-ratio bucket, one line per experiment (``buckets``: label ->
    bucket CSV)."""
    tables = {label: pd.read_csv(path) for label, path in buckets.items()}
    fig, axes = plt.subplots(2, 2, figsize=(9, 6.5))
    for ax, (key, label) in zip(axes.flat, BUCKET_METRICS):
        for label_, table in tables.items():
            ax.plot(table["bucket"], table[key], "o-", label=label_)
        if all(table[key].isna().all() for table in tables.values()):
            ax.text(0.5, 0.5, f"{label}: n/a (weights not found, or off)", ha="center",
                    transform=ax.transAxes)
            ax.set_xticks([])
            ax.set_yticks([])
        ax.set_xlabel("hole area")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.tick_params(axis="x", labelsize=8)
    axes.flat[0].legend(fontsize=8)
    fig.suptitle("Test metrics against the hole ratio", fontsize=11)
    fig.tight_layout()
    _save(fig, out)


def _mean_with_band(ax: plt.Axes, xs: np.ndarray, psnr: np.ndarray, label: str) -> None:
    """One network's curve: the mean over seeds (rows of ``psnr``), with a band of ± one sd
    between seeds where there are two or more."""
    mean = psnr.mean(axis=0)
    line, = ax.plot(xs, mean, "o-", ms=3, label=label)
    if len(psnr) > 1:
        sd = psnr.std(axis=0, ddof=1)
        ax.fill_between(xs, mean - sd, mean + sd, color=line.get_color(), alpha=0.2, lw=0)


def _floor_lines(ax: plt.Axes, floors: dict[str, float] | None) -> None:
    """The training-free methods as horizontal lines, one line style each."""
    for (label, value), style in zip((floors or {}).items(), ("--", ":", "-.", (0, (5, 1)))):
        ax.axhline(value, color="0.35", ls=style, lw=1.2,
                   label=f"{label} (training-free): {value:.2f} dB")


def experiment_curves(histories: list[tuple[str, str | Path]], out: str | Path,
                      floors: dict[str, float] | None = None, split: str | None = None) -> None:
    """Validation PSNR of every trained experiment against optimizer steps and against training
    wall time, on one figure (``histories``: (label, train_log.csv) pairs; the seeds of one
    experiment share its label and are drawn as their mean with a band of ± one sd between
    seeds), the training-free methods as horizontal lines (``floors``: label -> PSNR on the same
    ``split``)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    grouped: dict[str, list[pd.DataFrame]] = {}
    for label_, path in histories:
        grouped.setdefault(label_, []).append(pd.read_csv(path))
    for label_, logs in grouped.items():
        epochs = min(len(log_) for log_ in logs)  # seeds stopped alike; the common epochs
        psnr = np.stack([log_["val_psnr"].to_numpy()[:epochs] for log_ in logs])
        for ax, x in zip(axes, ("steps", "wall_seconds")):
            xs = np.mean([log_[x].to_numpy()[:epochs] for log_ in logs], axis=0)
            seeds = f" (mean of {len(logs)} seeds, ± sd)" if len(logs) > 1 else ""
            _mean_with_band(ax, xs, psnr, label_ + seeds)
    for ax in axes:
        _floor_lines(ax, floors)
    if split is None:
        split = pd.read_csv(histories[0][1])["val_split"].iloc[-1] if histories else "test"
    if not histories:
        for ax in axes:
            ax.text(0.5, 0.5, "no trained experiment", ha="center", transform=ax.transAxes)
    axes[0].set_xlabel("optimizer steps")
    axes[1].set_xlabel("training wall time (s)")
    axes[0].set_ylabel(f"PSNR (dB), composite, {split} split")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Every experiment: what it learned for what it cost", fontsize=11)
    fig.tight_layout()
    _save(fig, out)


def crossing_figure(curves: dict[str, list[pd.Series]], out: str | Path,
                    floors: dict[str, float] | None = None) -> None:
    """Validation PSNR against optimizer steps of the networks a crossing compares
    (``curves``: label -> one series per seed, PSNR indexed by step): the seed mean with a band
    of ± one sd between seeds where there are two or more, and the training-free floor as
    horizontal lines (``floors``: label -> PSNR on the same split)."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for label_, seeds in curves.items():
        frame = pd.concat(seeds, axis=1).dropna()  # the steps every seed reached
        n = frame.shape[1]
        _mean_with_band(ax, frame.index.to_numpy(), frame.to_numpy().T,
                        label_ + (f" (mean of {n} seeds, ± sd)" if n > 1 else " (1 seed)"))
    _floor_lines(ax, floors)
    ax.set_xlabel("optimizer steps")
    ax.set_ylabel("validation PSNR (dB), composite")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, out)


def comparison_forest(comparisons_csv: str | Path, out: str | Path,
                      metric: str = "psnr") -> None:
    """The paired differences of ``metric`` (a − b) with their seed-aware 95 % intervals (thick)
    and the first seed pair's per-image intervals (thin, "this trained model")."""
    table = pd.read_csv(comparisons_csv)
    table = table[table["metric"] == metric].reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.45 * max(1, len(table))))
    for y, row in table.iterrows():
        ax.plot([row["model_ci_low"], row["model_ci_high"]], [y, y], color="0.6", lw=1)
        if pd.notna(row["ci_low"]):
            ax.plot([row["ci_low"], row["ci_high"]], [y, y], color="C0", lw=4,
                    solid_capstyle="butt")
        ax.plot(row["difference"], y, "o", color="C3" if row["distinguishable"] == "yes"
                else "k", ms=5)
    ax.axvline(0.0, color="0.3", lw=1, ls="--")
    ax.set_yticks(range(len(table)), [f"{a} − {b}" for a, b in zip(table["a"], table["b"])],
                  fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"{metric.upper()} difference (a − b); thick: 95 % over seeds, thin: "
                  "first seed pair over images")
    if table.empty:
        ax.text(0.5, 0.5, "no comparisons", ha="center", transform=ax.transAxes)
    ax.grid(axis="x", alpha=0.3)
    fig.suptitle("Paired comparisons on the same test images (red: distinguishable at 95 %, "
                 "Holm)", fontsize=10)
    fig.tight_layout()
    _save(fig, out)


def experiment_grid(manifest: str | Path, predictions: str | Path, out: str | Path, label: str,
                    n_ids: int) -> None:
    """One experiment's prediction grid on the first ``n_ids`` test ids."""
    prediction_grid(manifest, predictions, out, label, fixed_ids(manifest, n_ids))


def comparison_figures(manifest: str | Path, labels: list[str], predictions: list[str | Path],
                       buckets: list[str | Path], histories: list[str | Path],
                       grid_png: str | Path, buckets_png: str | Path, curves_png: str | Path,
                       n_ids: int, trained_labels: list[str] | None = None,
                       floors: list[str | Path] = (), floor_labels: list[str] = (),
                       floor_methods: list[dict] = (), smoke_test: bool = False) -> None:
    """The figures across experiments: the side-by-side grid, the metrics against the hole
    ratio, and PSNR against steps and wall time with the training-free floor on the split the
    histories monitored (its test score when that is the test split, else measured there)."""
    from ndmha.evaluate import floor_psnr

    comparison_grid(manifest, dict(zip(labels, predictions)), grid_png, fixed_ids(manifest, n_ids),
                    smoke_test)
    metrics_vs_hole(dict(zip(labels, buckets)), buckets_png)
    trained_labels = list(labels if trained_labels is None else trained_labels)
    split = pd.read_csv(histories[0])["val_split"].iloc[-1] if histories else "test"
    floor_values = {}
    for label_, summary, method in zip(floor_labels, floors, floor_methods):
        floor_values[label_] = (json.loads(Path(summary).read_text())["psnr"] if split == "test"
                                else floor_psnr(manifest, split, method["architecture"],
                                                method["options"]))
    experiment_curves(list(zip(trained_labels, histories)), curves_png, floor_values, split)
