"""The tables: the paper's benchmark with the seed report's rows and ours, the seed report's
"test metrics", every experiment side by side with its budget, the seed report's protocol beside
our runs of it, and where every measured number came from.

Every measured row carries its budget (epochs, optimizer steps, images seen, batch size, training
wall time and device) and its provenance (code commit, settings and data hashes, software).
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd

from ndmha import uncertainty
from ndmha.errors import DataError
from ndmha.io import atomic_open
from ndmha.models import build_model, count_gmac

log = logging.getLogger("ndmha")

BUDGET = ["epochs", "steps", "images_seen", "batch", "train_time_s", "train_device"]
#: over seeds (ndmha.uncertainty): the spread between seeds and the 95 % interval of each
#: per-image metric, the spread only of FID and KID; empty for a single run
SEED_COLUMNS = ["seeds", *(f"{m}_{q}" for m in uncertainty.INTERVAL_METRICS
                           for q in ("seed_sd", "ci_low", "ci_high")),
                *(f"{m}_seed_sd" for m in uncertainty.SPREAD_METRICS)]
COLUMNS = ["method", "source", "kind", "psnr_db", "ssim", "l1", "lpips", "fid", "kid",
           *SEED_COLUMNS, "params_m", "runtime_s", "gmac", "gmac_without_deformable", "gmac_at_size", *BUDGET,
           "device", "dataset", "git_commit"]
TEST_COLUMNS = ["experiment", "images", "image_size", "loss", "l1", "psnr", "ssim", "lpips",
                "fid", "kid", "kid_std", "parameters", "inference_s_per_image", "device", *BUDGET]
EXPERIMENT_COLUMNS = ["experiment", "label", "kind", "architecture", "options", "loss_weights",
                      "psnr", "ssim", "l1", "lpips", "fid", "kid", *SEED_COLUMNS, "params_m",
                      "gmac",
                      "gmac_without_deformable", *BUDGET, "test_images"]
PROVENANCE_COLUMNS = ["experiment", "git_commit", "git_dirty", "config_sha256",
                      "train_settings_sha256", "python", "torch", "torchvision", "cuda", "cudnn",
                      "train_device", "eval_device", "dataset", "dataset_images",
                      "manifest_sha256", "train_seconds", "eval_seconds"]
NEEDS_WEIGHTS = ("lpips", "fid", "kid", "kid_std")
GMAC_SIZE = 256  # the paper's GMAC column is for 256 x 256 inputs
#: budgets the references state (the seed report: "200 epochs with a batch size of 1", "3 days",
#: 27,000 training images; its reduced NDMHA: 750 images, 12 epochs)
QUOTED_BUDGETS = {
    "NDMHA (paper)": {"epochs": 200, "steps": 5_400_000, "images_seen": 5_400_000, "batch": 1,
                      "train_time_s": 3 * 86400, "train_device": "not stated"},
    "NDMHA (seed report reduced)": {"epochs": 12, "images_seen": 9000,
                                    "train_device": "Colab GPU"},
}
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


def _short(value: object) -> object:
    """A metric value, or ``n/a`` for a metric whose weights were missing (the path goes to the
    caveats)."""
    return "n/a" if isinstance(value, str) else value


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
    notes = [f"{k.upper()} {summary[k]}" for k in ("lpips", "fid")  # KID shares FID's weights
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


def _commit(summary: dict) -> str:
    training = summary.get("provenance", {}).get("training", {})
    commit = training.get("git_commit")
    if not commit:
        return "unknown"
    return commit[:10] + (" (dirty)" if training.get("git_dirty") else "")


def _gmacs(summary: dict, size: int) -> dict[str, float | None]:
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


def measured_row(summary: dict, labels: dict[str, str] | None = None) -> dict:
    """One benchmark row from a metrics summary written by :func:`ndmha.evaluate.score`."""
    return {
        "method": method_name(summary, labels),
        "source": "measured",
        "kind": kind_of(summary),
        "psnr_db": summary["psnr"],
        "ssim": summary["ssim"],
        "l1": summary["l1"],
        **{k: _short(summary[k]) for k in ("lpips", "fid", "kid")},
        **seed_columns(summary),
        "params_m": summary["parameters"] / 1e6,
        "runtime_s": summary["inference_s_per_image"],
        **_gmacs(summary, summary["image_size"]),
        **budget_of(summary),
        "device": summary["device"],
        "dataset": f"{summary['dataset']}, {summary['images']} test images, "
                   f"{summary['image_size']}px",
        "git_commit": _commit(summary),
    }


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


#: "clears the floor": the mean test PSNR above the best training-free method's by more than this,
#: from one seed each (until seeds give an interval: a change of seed moved the demo's ablation
#: rows by up to ~0.3 dB, docs/architecture.md)
FLOOR_MARGIN_DB = 0.5
FLOOR_COLUMNS = ["experiment", "label", "psnr", "ssim", "l1", "floor", "floor_psnr",
                 "floor_ssim", "floor_l1", "psnr_margin_db", "margin_ci_low", "margin_ci_high",
                 "seeds", "rule", "clears_floor", "verdict", "steps", "train_time_s",
                 "test_images"]


def _at(summary: dict) -> str:
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


def _clears(s: dict, floor: dict) -> tuple[bool, float | None, float | None, str]:
    """Whether a row clears the floor, its margin's interval and the rule used: with two or more
    seeds, the 95 % interval of the margin over seeds lies above 0 (the floor learns nothing and
    runs once: the margin's interval is the row's shifted); with one, the margin exceeds
    FLOOR_MARGIN_DB."""
    low, high = s.get("psnr_ci_low"), s.get("psnr_ci_high")
    if low is not None and high is not None:
        return (low - floor["psnr"] > 0, low - floor["psnr"], high - floor["psnr"],
                f"95 % interval over {len(s['seeds'])} seeds above 0")
    return (s["psnr"] - floor["psnr"] > FLOOR_MARGIN_DB, None, None,
            f"one seed: margin above {FLOOR_MARGIN_DB} dB")


def rows_note(summaries: list[dict], labels: dict[str, str] | None = None) -> str:
    """What the benchmark and experiments tables say of their measured rows: against the floor,
    at which budgets, of which kinds, and how the seeds' intervals were made."""
    parts = [floor_table(summaries, labels)[1], budget_note(summaries, labels),
             kinds_note(summaries),
             uncertainty.METHOD_NOTE if any(len(s.get("seeds", [])) > 1 for s in summaries)
             else ""]
    return "\n\n".join(p for p in parts if p)


def floor_table(summaries: list[dict], labels: dict[str, str] | None = None
                ) -> tuple[pd.DataFrame, str]:
    """Every row that is not training-free against the floor (the training-free row with the
    highest mean test PSNR), and one sentence saying whether they clear it. ``summaries`` are
    per experiment (:func:`aggregate`): a row with seeds clears it when the 95 % interval of its
    margin lies above 0, a single run when its margin exceeds FLOOR_MARGIN_DB."""
    free = [s for s in summaries if is_floor(s)]
    trained = [s for s in summaries if not is_floor(s)]  # trained, imported or external
    if not free:
        return (pd.DataFrame(columns=FLOOR_COLUMNS),
                "No training-free floor in this run (add an experiment with architecture telea "
                "or navier_stokes): nothing says whether training beat a method that learns "
                "nothing.")
    floor = max(free, key=lambda s: s["psnr"])
    rows = []
    for s in trained:
        clears, low, high, rule = _clears(s, floor)
        margin = s["psnr"] - floor["psnr"]
        interval = f", 95 % interval {low:+.2f} to {high:+.2f}" if low is not None else ""
        rows.append({
            "experiment": s["experiment"], "label": label_of(s, labels), "psnr": s["psnr"],
            "ssim": s["ssim"], "l1": s["l1"], "floor": label_of(floor, labels),
            "floor_psnr": floor["psnr"], "floor_ssim": floor["ssim"], "floor_l1": floor["l1"],
            "psnr_margin_db": margin, "margin_ci_low": low, "margin_ci_high": high,
            "seeds": len(s.get("seeds", [])) or 1, "rule": rule,
            "clears_floor": "yes" if clears else "no",
            "verdict": (f"{label_of(s, labels)} {'clears' if clears else 'does not clear'} the "
                        f"training-free floor ({label_of(floor, labels)}, {floor['psnr']:.2f} "
                        f"dB) {_at(s)}: {s['psnr']:.2f} dB ({margin:+.2f}{interval})"),
            "steps": budget_of(s)["steps"], "train_time_s": budget_of(s)["train_time_s"],
            "test_images": s["images"]})
    table = pd.DataFrame(rows, columns=FLOOR_COLUMNS)
    where = (f"the training-free floor ({label_of(floor, labels)}, {floor['psnr']:.2f} dB, SSIM "
             f"{floor['ssim']:.4f}, on the same {floor['images']} test images)")
    if not trained:
        return table, f"Only training-free rows in this run; the floor is {where}."
    cleared = [r for r in rows if r["clears_floor"] == "yes"]
    listed = "; ".join(f"{r['label']} {r['psnr']:.2f} dB ({r['psnr_margin_db']:+.2f})"
                       for r in rows)
    noun = "trained model" if all(is_trained(s) for s in trained) else "model"
    verdict = (f"every {noun} clears" if len(cleared) == len(rows) else
               f"no {noun} clears" if not cleared else
               f"{len(cleared)} of {len(rows)} {noun}s clear")
    return table, (f"At this budget {verdict} {where}: {listed}. Clearing it means, with two "
                   "or more seeds, a 95 % interval of the margin over seeds above 0 (Student-t "
                   "over the per-seed means); with one seed, a mean test PSNR more than "
                   f"{FLOOR_MARGIN_DB} dB above the floor's. SSIM and L1 are in the table "
                   "whichever side they fall.")


COMPARISON_COLUMNS = ["a", "b", "metric", "difference", "seed_pairs", "seed_sd", "ci_low",
                      "ci_high", "p_seeds", "p_holm", "distinguishable", "seeds_to_resolve",
                      "model_difference", "model_ci_low", "model_ci_high", "model_wilcoxon_p",
                      "images"]
#: a lower value is better for these (a negative difference a - b favours a)
LOWER_IS_BETTER = ("l1", "lpips")


def comparisons_table(pairs: list[list[str]], per_image: dict[str, str | Path],
                      summaries: list[dict], runs: dict[str, dict] | None = None,
                      labels: dict[str, str] | None = None
                      ) -> tuple[pd.DataFrame, str]:
    """The paired comparisons ``pairs`` ([a, b]: a - b; ``floor`` is the best training-free
    experiment) on the same test images, per metric: the mean difference, its seed-aware 95 %
    interval and t-test (Holm-corrected over the pairs, per metric), and the first seed pair's
    per-image interval and Wilcoxon test ("this trained model"); ``per_image``: run name -> its
    per-image CSV; ``summaries``: per experiment (:func:`aggregate`)."""
    frames = {run: pd.read_csv(path, dtype={"id": str}).set_index("id")
              for run, path in per_image.items()}
    floors = [s for s in summaries if is_floor(s)]
    floor = max(floors, key=lambda s: s["psnr"])["experiment"] if floors else None
    members: dict[str, dict[int | str | None, str]] = {}  # experiment -> seed key -> run
    for run in frames:
        info = (runs or {}).get(run, {})
        seed = info.get("seed")
        if seed is None and info.get("trained"):
            seed = uncertainty.UNSEEDED  # one training run: its seed spread is unknown
        members.setdefault(info.get("group", run), {})[seed] = run
    resolved = [[floor if x == "floor" else x for x in pair] for pair in pairs]
    resolved = [pair for pair in resolved if None not in pair and pair[0] != pair[1]]
    rows = []
    for metric in uncertainty.INTERVAL_METRICS:
        block = []
        for a, b in resolved:
            sides = [{seed: frames[run][metric] for seed, run in members[x].items()}
                     for x in (a, b)]
            if any(side[s].isna().all() for side in sides for s in side):
                continue  # a metric without weights (LPIPS n/a)
            result = uncertainty.paired_difference(*sides)
            block.append({"a": label_of({"experiment": a}, labels),
                          "b": label_of({"experiment": b}, labels), "metric": metric,
                          **result, "seeds_to_resolve": uncertainty.seeds_to_resolve(
                              result["seed_sd"], result["difference"])})
        rows += _verdicts(block)
    return (pd.DataFrame(rows, columns=COMPARISON_COLUMNS),
            _comparisons_note(len(resolved)) + uncertainty.METHOD_NOTE)


def _verdicts(block: list[dict]) -> list[dict]:
    """One metric's comparisons with Holm's adjusted p-values and "distinguishable" (from the
    seed-aware test only)."""
    for row, adjusted in zip(block, uncertainty.holm([r["p_seeds"] for r in block])):
        row["p_holm"] = adjusted
        row["distinguishable"] = ("one seed pair: not claimable" if adjusted is None
                                  else "yes" if adjusted < 0.05 else "no")
    return block


def _comparisons_note(made: int) -> str:
    return (f"{made} comparisons (a − b; for l1 and lpips lower is better), each on every "
            "metric; Holm's correction over the comparisons, per metric, at 5 %. ")


#: the columns of a file of recorded runs (:func:`recorded_comparisons`); metrics as available
RECORDED_COLUMNS = ("experiment", "seed", "kind", "test_images")


def recorded_comparisons(path: str | Path, pairs: list[list[str]]
                         ) -> tuple[pd.DataFrame, str]:
    """The seed-aware half of :func:`comparisons_table` from a CSV of recorded per-seed test
    means (one row per run: ``experiment``, ``seed`` (blank for a run that does not vary with
    it), ``kind`` (``trained`` or ``training-free``), ``test_images`` and the metrics), for runs
    no longer on disk or made in different sessions on the same test images. ``floor`` in a pair
    is the training-free row with the best PSNR. The "this trained model" columns need the
    per-image files and stay blank."""
    path = Path(path)
    try:
        runs = pd.read_csv(path, dtype={"experiment": str, "kind": str}, comment="#")
    except (OSError, pd.errors.ParserError) as error:
        raise DataError(f"{path}: cannot read the recorded runs: {error}") from error
    missing = [c for c in RECORDED_COLUMNS if c not in runs.columns]
    if missing:
        raise DataError(f"{path}: recorded runs need the columns {missing}")
    if runs.duplicated(["experiment", "seed"]).any():
        twice = runs[runs.duplicated(["experiment", "seed"], keep=False)]
        raise DataError(f"{path}: a run is recorded twice: "
                          f"{sorted(set(zip(twice.experiment, twice.seed.astype(str))))}")
    if runs.test_images.nunique() != 1:
        raise DataError(f"{path}: the runs were scored on different test sets (test_images "
                          f"{sorted(runs.test_images.unique())}): not paired")
    floors = runs[runs.kind == "training-free"]
    floor = floors.loc[floors.psnr.idxmax(), "experiment"] if len(floors) else None
    if floor is None and any("floor" in pair for pair in pairs):
        raise DataError(f"{path}: 'floor' needs a training-free run; none is recorded")
    resolved = [[floor if x == "floor" else x for x in pair] for pair in pairs]
    unknown = sorted({x for pair in resolved for x in pair} - set(runs.experiment))
    if unknown:
        raise DataError(f"{path}: no recorded run of {unknown}")
    groups = {name: {(None if pd.isna(seed) else int(seed)): row for seed, row in
                     zip(group.seed, group.to_dict("records"))}
              for name, group in runs.groupby("experiment")}
    rows = []
    for metric in (m for m in uncertainty.INTERVAL_METRICS if m in runs.columns):
        block = []
        for a, b in resolved:
            sides = [{seed: row[metric] for seed, row in groups[x].items()} for x in (a, b)]
            if any(pd.isna(v) for side in sides for v in side.values()):
                continue
            result = uncertainty.paired_means(*sides)
            block.append({"a": a, "b": b, "metric": metric, **result,
                          "seeds_to_resolve": uncertainty.seeds_to_resolve(
                              result["seed_sd"], result["difference"]),
                          "images": int(runs.test_images.iloc[0])})
        rows += _verdicts(block)
    note = (_comparisons_note(len(resolved)) + f"From the recorded per-seed means of {path.name} "
            "(the same test images): a seed pair's mean difference is the difference of its "
            "means; the 'this trained model' columns need per-image files and are blank. "
            + uncertainty.METHOD_NOTE)
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS), note


def write_tables(paper_csv: str | Path, seed_report_csv: str | Path,
                 summaries: list[str | Path], out_csv: str | Path, out_md: str | Path,
                 test_csv: str | Path, experiments_csv: str | Path | None = None,
                 experiments_md: str | Path | None = None, seed_csv: str | Path | None = None,
                 seed_md: str | Path | None = None, provenance_csv: str | Path | None = None,
                 floor_csv: str | Path | None = None, floor_md: str | Path | None = None,
                 labels: dict[str, str] | None = None,
                 references: dict[str, str] | None = None,
                 settings: dict[str, dict] | None = None,
                 config_sha256: str = "", runs: dict[str, dict] | None = None,
                 per_image: dict[str, str | Path] | None = None,
                 comparisons: list[list[str]] | None = None,
                 comparisons_csv: str | Path | None = None,
                 comparisons_md: str | Path | None = None) -> pd.DataFrame:
    """Every table (CSV, and Markdown where a reader reads it): the benchmark, the seed report's
    test metrics for our experiments, the experiments with their budgets, the seed report's
    protocol beside ours (``references``: experiment -> the seed report's method) and the
    provenance of every row; returns the benchmark table. ``runs`` (run -> its experiment and
    seed) merges an experiment's seeds into one row with its spread and interval (the test
    metrics and provenance stay per run); ``comparisons`` with ``per_image`` (run -> per-image
    CSV) writes the paired comparisons."""
    loaded = [json.loads(Path(p).read_text()) for p in summaries]
    merged = aggregate(loaded, runs)
    test = pd.DataFrame([{**{k: _short(s[k]) if k in NEEDS_WEIGHTS else s.get(k)
                             for k in TEST_COLUMNS if k not in BUDGET},
                          "loss": s.get("test_loss"), **budget_of(s)} for s in loaded],
                        columns=TEST_COLUMNS)
    _write_csv(test, test_csv)
    table = benchmark_table(paper_csv, seed_report_csv, merged, out_csv, out_md, labels)
    if experiments_csv is not None:
        experiments_table(merged, experiments_csv, experiments_md, labels, settings)
    if seed_csv is not None:
        seed_report_table(seed_report_csv, merged, seed_csv, seed_md, references or {}, labels)
    if provenance_csv is not None:
        provenance_table(loaded, provenance_csv, config_sha256)
    if floor_csv is not None:
        floor, verdict = floor_table(merged, labels)
        _write_csv(floor, floor_csv)
        _write_md(floor, floor_md, "\n" + verdict + "\n")
    if comparisons_csv is not None:
        compared, note = comparisons_table(comparisons or [], per_image or {}, merged, runs,
                                           labels)
        _write_csv(compared, comparisons_csv)
        _write_md(compared, comparisons_md, "\n" + note + "\n")
    return table


def _write_csv(frame: pd.DataFrame, path: str | Path) -> None:
    with atomic_open(path, newline="") as fh:
        frame.to_csv(fh, index=False, float_format="%.6g")


def _write_md(frame: pd.DataFrame, path: str | Path | None, note: str,
              notes: list[str] = ()) -> None:
    if path is not None:
        with atomic_open(path) as fh:
            fh.write(to_markdown(frame, note, notes))


def benchmark_table(paper_csv: str | Path, seed_report_csv: str | Path,
                    summaries: list[dict], out_csv: str | Path, out_md: str | Path,
                    labels: dict[str, str] | None = None) -> pd.DataFrame:
    """Write the benchmark table as CSV and Markdown; returns it."""
    paper = pd.read_csv(paper_csv).assign(source="paper", device="not stated",
                                          dataset="CelebA-HQ + QD-IMD (paper)")
    seed = pd.read_csv(seed_report_csv)
    seed = seed[seed["split"] == "test"].rename(columns={"model": "method", "inference_s": "runtime_s"})
    seed = seed.assign(source="seed report", device="Colab GPU",
                       dataset=[f"CelebA-HQ + QD-IMD, {int(n)} test images" if pd.notna(n)
                                else "CelebA-HQ + QD-IMD" for n in seed["images"]])
    quoted = pd.concat([paper, seed.drop(columns=["epochs"])], ignore_index=True)
    for column in BUDGET:
        quoted[column] = None
    for method, budget in QUOTED_BUDGETS.items():
        for column, value in budget.items():
            quoted.loc[quoted["method"] == method, column] = value
    ours = pd.DataFrame([measured_row(summary, labels) for summary in summaries])
    table = pd.concat([quoted, ours], ignore_index=True).reindex(columns=COLUMNS)
    _write_csv(table, out_csv)
    note = ("\n" + SSIM_NOTE + " GMAC: one forward pass at 256x256, deformable convs counted as "
            "convs of the same shape; gmac_without_deformable leaves them out, as tools without "
            "a formula for the deformable op count (the likely reading of the paper's column); "
            "gmac_at_size: at the evaluated size. Budget: epochs, optimizer steps, images seen, "
            "global batch, training wall time and device; the paper's and the seed report's are "
            "quoted where they state them. Paper and seed-report rows are quoted, not measured. "
            "Rows measured on the embedded demo dataset (procedural faces) are a smoke test of "
            "the pipeline and are not comparable with CelebA-HQ numbers. Training-free rows "
            "(kind training-free) learn nothing: the floor a trained row must clear; they have "
            "no budget, parameters or GMAC.\n\n"
            + rows_note(summaries, labels) + "\n")
    _write_md(table, out_md, note, [c for summary in summaries for c in caveats(summary, labels)])
    log.info("benchmark table with %d rows written to %s and %s", len(table), out_csv, out_md)
    return table


def _compact(values: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items()) if values else "(defaults)"


def experiments_table(summaries: list[dict], out_csv: str | Path, out_md: str | Path | None,
                      labels: dict[str, str] | None = None,
                      settings: dict[str, dict] | None = None) -> pd.DataFrame:
    """Every experiment: its architecture and options, loss weights, test metrics, size, cost
    and budget, one row each."""
    rows = []
    for s in summaries:
        gmacs = _gmacs(s, s["image_size"])
        loss = (settings or {}).get(s["experiment"], {}).get("loss", {})
        rows.append({"experiment": s["experiment"], "label": label_of(s, labels),
                     "kind": kind_of(s), "architecture": s["architecture"],
                     "options": _compact(s.get("options", {})),
                     "loss_weights": (_compact(loss) if is_trained(s)
                                      else NOT_TRAINED_HERE[kind_of(s)]),
                     "psnr": s["psnr"], "ssim": s["ssim"], "l1": s["l1"],
                     **{k: _short(s[k]) for k in ("lpips", "fid", "kid")},
                     **seed_columns(s), "params_m": s["parameters"] / 1e6, "gmac": gmacs["gmac"],
                     "gmac_without_deformable": gmacs["gmac_without_deformable"],
                     **budget_of(s), "test_images": s["images"]})
    table = pd.DataFrame(rows, columns=EXPERIMENT_COLUMNS)
    _write_csv(table, out_csv)
    _write_md(table, out_md, "\n" + SSIM_NOTE + "\n\n" + rows_note(summaries, labels) + "\n",
              [c for s in summaries for c in caveats(s, labels)])
    return table


def seed_report_table(seed_report_csv: str | Path, summaries: list[dict], out_csv: str | Path,
                      out_md: str | Path | None, references: dict[str, str],
                      labels: dict[str, str] | None = None) -> pd.DataFrame:
    """The seed report's numbers beside our runs of its protocol: for each experiment that names
    a seed-report method (``experiments.<name>.seed_report``), its test metrics (loss, L1, PSNR,
    SSIM, inference time) and budget, the seed's value and ours side by side."""
    seed = pd.read_csv(seed_report_csv)
    rows = []
    for s in summaries:
        method = references.get(s["experiment"])
        if method is None:
            continue
        theirs = seed[seed["model"] == method]
        quoted = theirs[theirs["split"] == "test"].iloc[0] if len(theirs) else None
        budget = budget_of(s)
        ours = {"loss": s.get("test_loss"), "l1": s["l1"], "psnr_db": s["psnr"],
                "ssim": s["ssim"], "inference_s": s["inference_s_per_image"],
                "images": s["images"], "epochs": budget["epochs"],
                "train_images": s.get("budget", {}).get("train_images")}
        seed_train = theirs[theirs["split"] == "train"]
        quoted_values = {"loss": None, "l1": None, "psnr_db": None, "ssim": None,
                         "inference_s": None, "images": None, "epochs": None,
                         "train_images": (int(seed_train["images"].iloc[0])
                                          if len(seed_train) and pd.notna(
                                              seed_train["images"].iloc[0]) else None)}
        if quoted is not None:
            for key in quoted_values:
                if key in quoted and pd.notna(quoted[key]):
                    quoted_values[key] = quoted[key]
        for key, value in ours.items():
            rows.append({"experiment": s["experiment"], "label": label_of(s, labels),
                         "seed_report_method": method, "quantity": key,
                         "seed_report": quoted_values.get(key), "ours": value})
    table = pd.DataFrame(rows, columns=["experiment", "label", "seed_report_method", "quantity",
                                        "seed_report", "ours"])
    _write_csv(table, out_csv)
    note = ("\nThe seed report's protocol (its 60/20/20 split, the baseline retrained on train + "
            "val, the reduced NDMHA on 750 images for 12 epochs) run by this workflow. Its "
            "'loss' is its own Keras objective (not stated), ours the experiment's objective on "
            "the test split: not comparable. " + SSIM_NOTE + " Ours on the data of this run "
            "(see the dataset of the benchmark table): on the embedded demo a smoke test, not "
            "a reproduction.\n")
    if table.empty:
        note = "\nNo experiment names a seed-report method (experiments.<name>.seed_report).\n"
    _write_md(table, out_md, note)
    return table


def provenance_table(summaries: list[dict], out_csv: str | Path,
                     config_sha256: str = "") -> pd.DataFrame:
    """Where every measured row came from: code, config and settings hashes, software, devices,
    data, wall times."""
    rows = []
    for s in summaries:
        training = s.get("provenance", {}).get("training", {})
        evaluation = s.get("provenance", {}).get("evaluation", {})
        rows.append({"experiment": s["experiment"], "git_commit": training.get("git_commit"),
                     "git_dirty": training.get("git_dirty"), "config_sha256": config_sha256,
                     "train_settings_sha256": training.get("settings_sha256"),
                     **{k: training.get(k) for k in ("python", "torch", "torchvision", "cuda",
                                                     "cudnn")},
                     "train_device": training.get("device"),
                     "eval_device": evaluation.get("device"),
                     "dataset": evaluation.get("dataset"),
                     "dataset_images": training.get("images"),
                     "manifest_sha256": training.get("manifest_sha256"),
                     "train_seconds": s.get("budget", {}).get("train_seconds"),
                     "eval_seconds": evaluation.get("wall_seconds")})
    table = pd.DataFrame(rows, columns=PROVENANCE_COLUMNS)
    _write_csv(table, out_csv)
    return table


def to_markdown(table: pd.DataFrame, note: str = "", notes: list[str] = ()) -> str:
    """A GitHub-style Markdown table, blanks for missing values, a note and the caveats of our
    rows (e.g. a perceptual loss trained with random VGG19 weights)."""
    formats = {"psnr_db": "{:.2f}", "psnr": "{:.2f}", "ssim": "{:.4f}", "l1": "{:.4f}",
               "lpips": "{:.4f}", "fid": "{:.2f}", "kid": "{:.4f}", "params_m": "{:.3f}",
               "runtime_s": "{:.4f}", "gmac": "{:.2f}", "gmac_without_deformable": "{:.2f}",
               "gmac_at_size": "{:.3f}", "train_time_s": "{:.0f}", "epochs": "{:.0f}",
               "steps": "{:.0f}", "images_seen": "{:.0f}", "batch": "{:.0f}",
               "seed_report": "{:.4g}", "ours": "{:.4g}", "floor_psnr": "{:.2f}",
               "floor_ssim": "{:.4f}", "floor_l1": "{:.4f}", "psnr_margin_db": "{:+.2f}",
               "test_images": "{:.0f}", **{c: "{:.4g}" for c in SEED_COLUMNS[1:]},
               "seeds": "{:.0f}", "margin_ci_low": "{:+.2f}", "margin_ci_high": "{:+.2f}",
               **{c: "{:.4g}" for c in COMPARISON_COLUMNS[3:8]},
               **{c: "{:.3g}" for c in ("p_seeds", "p_holm", "model_wilcoxon_p")},
               **{c: "{:.4g}" for c in ("model_difference", "model_ci_low", "model_ci_high")},
               "seed_pairs": "{:.0f}", "seeds_to_resolve": "{:.0f}", "images": "{:.0f}"}

    def cell(column: str, value: object) -> str:
        if value is None or (not isinstance(value, str) and pd.isna(value)):
            return ""
        if isinstance(value, str):
            return value
        return formats.get(column, "{}").format(value)

    cells = pd.DataFrame({c: [cell(c, v) for v in table[c]] for c in table.columns},
                         columns=table.columns)
    # tabulate (pandas' to_markdown) pads the columns; the cells are our strings, never re-parsed
    body = cells.to_markdown(index=False, tablefmt="github", disable_numparse=True)
    return body + "\n" + note + "".join(f"\nCaveat: {c}.\n" for c in notes)
