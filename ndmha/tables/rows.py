"""What every table says of a measured row: the experiment's summary merged over its seeds, its
kind, its budget (epochs, optimizer steps, images seen, batch size, training wall time and device),
its cost (parameters, GMAC) and its provenance (the code's commit).
"""

from __future__ import annotations

import functools
import json
from typing import Any

from ndmha import uncertainty
from ndmha.models import build_model, count_gmac
from ndmha.tables.format import missing

BUDGET = ["epochs", "steps", "images_seen", "batch", "train_time_s", "train_device"]
#: over seeds (ndmha.uncertainty): the spread between seeds and the 95 % interval of each
#: per-image metric, the spread only of FID and KID; empty for a single run
SEED_COLUMNS = ["seeds", *(f"{m}_{q}" for m in uncertainty.INTERVAL_METRICS
                           for q in ("seed_sd", "ci_low", "ci_high")),
                *(f"{m}_seed_sd" for m in uncertainty.SPREAD_METRICS)]
GMAC_SIZE = 256  # the paper's GMAC column is for 256 x 256 inputs
SSIM_NOTE = ("SSIM as Wang et al. define it (Gaussian 11x11, sigma 1.5, the mean over the valid "
             "region, as scikit-image and tf.image.ssim compute it); PSNR and SSIM on RGB in "
             "[0, 1] (data_range 1), of the composite against the ground truth.")


def aggregate(summaries: list[dict], runs: dict[str, dict] | None = None) -> list[dict]:
    """One summary per experiment from its runs' summaries (``runs``: run name -> its
    ``group`` and ``seed``; a run not listed is its own experiment): the mean over seeds of
    every metric, and for the per-image ones the spread between seeds and the 95 % interval
    (:func:`ndmha.uncertainty.seed_interval`), for FID and KID the spread only. The budget is
    the first run's (every seed trains at the same budget), its wall time the mean."""
    groups: dict[str, list[dict]] = {}
    for s in summaries:
        groups.setdefault((runs or {}).get(s["experiment"], {}).get("group", s["experiment"]),
                          []).append(s)
    merged = []
    for group, members in groups.items():
        seeds = [(runs or {}).get(s["experiment"], {}).get("seed") for s in members]
        row = {**members[0], "experiment": group, "runs": [s["experiment"] for s in members],
               "seeds": [x for x in seeds if x is not None]}
        for metric in (*uncertainty.INTERVAL_METRICS, *uncertainty.SPREAD_METRICS):
            if any(metric not in s for s in members):  # a summary from before the metric
                continue
            values = [s[metric] for s in members]
            if any(isinstance(v, str) for v in values):  # n/a: weights missing
                continue
            interval = uncertainty.seed_interval(values)
            row[metric] = interval["mean"]
            row[f"{metric}_seed_sd"] = interval["sd"]
            if metric in uncertainty.INTERVAL_METRICS:
                row[f"{metric}_ci_low"], row[f"{metric}_ci_high"] = (interval["low"],
                                                                     interval["high"])
        if len(members) > 1:
            budget = dict(members[0].get("budget", {}))
            times = [s.get("budget", {}).get("train_seconds") for s in members]
            if all(t is not None for t in times):
                budget["train_seconds"] = sum(times) / len(times)
            row["budget"] = budget
            row["warnings"] = list(dict.fromkeys(w for s in members
                                                 for w in s.get("warnings", [])))
        merged.append(row)
    return merged


def seed_columns(summary: dict) -> dict[str, Any]:
    """The seed columns of one aggregated row (empty for a single run)."""
    return {"seeds": len(summary.get("seeds", [])) or None,
            **{c: summary.get(c) for c in SEED_COLUMNS if c != "seeds"}}


def label_of(summary: dict, labels: dict[str, str] | None = None) -> str:
    return (labels or {}).get(summary["experiment"], summary["experiment"])


def kind_of(summary: dict) -> str:
    """A row's kind (``ndmha.config.KINDS``; summaries written before kinds existed: trained)."""
    return summary.get("kind", "trained")


def is_trained(summary: dict) -> bool:
    """Trained here: the rows with a budget of our own."""
    return kind_of(summary) == "trained"


def is_floor(summary: dict) -> bool:
    return kind_of(summary) == "training-free"


#: how the benchmark names a measured row of each kind
KIND_NAMES = {"trained": "ours", "training-free": "training-free, measured here",
              "imported": "imported weights, measured here",
              "external": "external predictions, measured here"}


def method_name(summary: dict, labels: dict[str, str] | None = None) -> str:
    return f"{label_of(summary, labels)} ({KIND_NAMES[kind_of(summary)]})"


def caveats(summary: dict, labels: dict[str, str] | None = None) -> list[str]:
    """What a reader must know about one measured row."""
    notes = [f"{k.upper()} {summary[k]}" + (" (switched off in the config)"
                                            if summary[k] == "off" else "")
             for k in ("lpips", "fid")  # KID shares FID's weights
             if isinstance(summary[k], str)]
    return [f"{method_name(summary, labels)}: {n}" for n in notes + summary.get("warnings", [])]


#: the budget cell of a method that learns nothing
NO_TRAINING = "none: training-free"
#: the budget cells of rows not trained here (their training, if any, is someone else's)
NOT_TRAINED_HERE = {"training-free": NO_TRAINING,
                    "imported": "not trained here: imported weights",
                    "external": "not trained here: external predictions"}


def budget_of(summary: dict) -> dict[str, Any]:
    """The budget columns of a measured row: a row not trained here has none of ours (0 steps),
    a fine-tuned row counts only the steps done here (``init_from`` says from what)."""
    kind = kind_of(summary)
    if kind != "trained":
        return {"epochs": 0, "steps": 0, "images_seen": 0, "batch": None, "train_time_s": 0,
                "train_device": NOT_TRAINED_HERE[kind]}
    budget = summary.get("budget", {})
    device = budget.get("train_device")
    start = budget.get("init_from")
    if start:
        before = start.get("steps_before")
        device = (f"{device}; fine-tuned from {start['file']} ({start['was']}"
                  + (f", {before} steps before" if before is not None else "") + ")")
    return {"epochs": budget.get("epochs"), "steps": budget.get("steps"),
            "images_seen": budget.get("images_seen"),
            "batch": budget.get("batch_size", 0) * budget.get("processes", 1) or None,
            "train_time_s": budget.get("train_seconds"), "train_device": device}


def commit(summary: dict) -> str:
    training = summary.get("provenance", {}).get("training", {})
    commit = training.get("git_commit")
    if not commit:
        return "unknown"
    return commit[:10] + (" (dirty)" if training.get("git_dirty") else "")


def gmacs(summary: dict, size: int) -> dict[str, float | None]:
    if kind_of(summary) not in ("trained", "imported"):  # not a network of ours: none to count
        return {"gmac": None, "gmac_without_deformable": None, "gmac_at_size": None}
    return dict(_count(summary["architecture"], json.dumps(summary.get("options") or {},
                                                           sort_keys=True), size))


@functools.lru_cache(maxsize=None)
def _count(architecture: str, options: str, size: int) -> tuple[tuple[str, float], ...]:
    """GMAC of an architecture with its options (JSON), once per table rule for every table."""
    model = build_model(architecture, json.loads(options), "torch")
    return (("gmac", count_gmac(model, GMAC_SIZE)),
            ("gmac_without_deformable", count_gmac(model, GMAC_SIZE, deformable=False)),
            ("gmac_at_size", count_gmac(model, size)))


def budget_note(summaries: list[dict], labels: dict[str, str] | None = None) -> str:
    """Whether the trained rows were trained at an equal budget, and which differ (training-free
    rows have no budget and are left out)."""
    summaries = [s for s in summaries if is_trained(s)]
    if not summaries:
        return ""
    keys = ("epochs", "steps", "images_seen", "batch")
    budgets = {label_of(s, labels): tuple(budget_of(s)[k] for k in keys) for s in summaries}
    if len(set(budgets.values())) == 1:
        epochs, steps, images, batch = next(iter(budgets.values()))
        return (f"Equal budget: every trained row took {epochs} epochs, {steps} optimizer "
                f"steps, {images} images seen, batch {batch} (wall time and device differ by "
                "model: see train_time_s).")
    listed = "; ".join(f"{name}: {e} epochs, {s} steps, {i} images, batch {b}"
                       for name, (e, s, i, b) in budgets.items())
    return ("Budgets differ: compare the trained rows only with their budgets in view. "
            + listed + ".")


def at(summary: dict) -> str:
    """Where a row stands: its budget of ours, or that it was not trained here."""
    if is_trained(summary):
        return f"at {budget_of(summary)['steps']} steps"
    return f"({NOT_TRAINED_HERE[kind_of(summary)]})"


def kinds_note(summaries: list[dict]) -> str:
    """What a reader must know of the rows not trained here, when there are any."""
    kinds = {kind_of(s) for s in summaries}
    notes = []
    if "imported" in kinds:
        notes.append("Imported rows (kind imported) were trained elsewhere, at a budget that is "
                     "not ours: they are not equal-budget rows, and the training set of whoever "
                     "trained them (the authors' CelebA-HQ split, for their checkpoint) may "
                     "contain our test images or masks, so their scores may be optimistic.")
    if "external" in kinds:
        notes.append("External rows (kind external) are another codebase's outputs on our "
                     "test images and masks (ndmha export-test), scored by our code exactly "
                     "as ours; their training is theirs and not counted here.")
    return " ".join(notes)


def budget_cell(row: dict) -> str:
    """A Markdown budget cell: optimizer steps × global batch, or why a row has none of ours."""
    device = row.get("train_device")
    if device == NO_TRAINING:
        return "none"
    if device in NOT_TRAINED_HERE.values():
        return "not ours"
    steps, batch, epochs = row.get("steps"), row.get("batch"), row.get("epochs")
    if not missing(steps):
        return f"{steps:,.0f} × {batch:.0f}" if not missing(batch) else f"{steps:,.0f} steps"
    if not missing(epochs):
        return f"{epochs:.0f} epochs"
    return ""


def names_note(summaries: list[dict], labels: dict[str, str] | None = None) -> str:
    """The Markdown tables name a measured row by its experiment; its label, in words."""
    named = [(s["experiment"], label_of(s, labels)) for s in summaries
             if label_of(s, labels) != s["experiment"]]
    return "".join(f"\n- {name}: {label}" for name, label in named)
