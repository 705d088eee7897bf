"""Paired comparisons on the same test images: the mean difference of two experiments per metric,
its seed-aware 95 % interval and t-test (Holm-corrected), and one seed pair's per-image test; from
the run's per-image files, or from recorded per-seed means (runs no longer on disk)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ndmha import uncertainty
from ndmha.errors import DataError
from ndmha.tables.format import every_column, interval, view
from ndmha.tables.rows import is_floor, label_of

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
    frames, members, resolved = _paired_runs(pairs, per_image, summaries, runs)
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


def _paired_runs(pairs: list[list[str]], per_image: dict[str, str | Path],
                 summaries: list[dict], runs: dict[str, dict] | None
                 ) -> tuple[dict[str, pd.DataFrame], dict[str, dict], list[list[str]]]:
    """The runs' per-image frames, each experiment's runs by seed key, and the pairs with
    ``floor`` resolved (to the training-free experiment with the best PSNR)."""
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
    return frames, members, [p for p in resolved if None not in p and p[0] != p[1]]


BUCKET_COLUMNS = ["a", "b", "metric", "bucket", "images", "difference", "ci_low", "ci_high",
                  "seed_pairs", "model_difference", "model_ci_low", "model_ci_high", "model_p"]
TREND = f"trend, per {uncertainty.TREND_STEP:.0%} more"


def bucket_table(pairs: list[list[str]], per_image: dict[str, str | Path],
                 summaries: list[dict], runs: dict[str, dict] | None = None,
                 labels: dict[str, str] | None = None) -> pd.DataFrame:
    """The paired comparisons by hole-ratio bucket, and a trend row each: how a − b changes
    with the holes' size (:func:`ndmha.uncertainty.gap_by_hole`), per metric."""
    frames, members, resolved = _paired_runs(pairs, per_image, summaries, runs)
    rows = []
    for a, b in resolved:
        for metric in uncertainty.INTERVAL_METRICS:
            sides = [{seed: frames[run][[metric, "hole_ratio", "bucket"]]
                      for seed, run in members[x].items()} for x in (a, b)]
            if any(side[s][metric].isna().all() for side in sides for s in side):
                continue  # a metric without weights (LPIPS n/a)
            found = uncertainty.gap_by_hole(*sides, metric)
            names = {"a": label_of({"experiment": a}, labels),
                     "b": label_of({"experiment": b}, labels), "metric": metric}
            rows += [{**names, **row} for row in found["buckets"]]
            rows.append({**names, "bucket": TREND, **found["trend"]})
    return pd.DataFrame(rows, columns=BUCKET_COLUMNS)


def bucket_view(table: pd.DataFrame, names: dict[str, str] | None = None) -> pd.DataFrame:
    """buckets.md: PSNR's a − b per bucket and its trend, with the seed-aware interval and the
    first seed pair's per-image interval."""
    names = names or {}
    psnr = table[table["metric"] == "psnr"]
    return view(psnr, {
        "a": lambda r: names.get(r["a"], r["a"]), "b": lambda r: names.get(r["b"], r["b"]),
        "holes": "bucket", "images": "images",
        "a − b (dB)": lambda r: f"{r['difference']:+.2f}",
        "95 %, seeds": lambda r: interval(r["ci_low"], r["ci_high"], 2),
        "seed pairs": "seed_pairs",
        "first pair, images (95 %)": lambda r: (f"{r['model_difference']:+.2f} ("
                                                f"{interval(r['model_ci_low'], r['model_ci_high'], 2)})")})


BUCKETS_NOTE = (
    "PSNR's paired gap a − b by hole-ratio bucket, on the same test images and masks; the last "
    f"row of each pair, \"{TREND}\", is how the gap changes with the holes' size: per seed "
    "pair, the least-squares slope of the bucket means over the buckets' mean hole ratio, "
    "times 0.1; its interval is the 95 % t-interval over seed pairs (none with one pair), "
    "beside the first pair's per-image slope and its interval (\"this trained model\"). "
    + every_column("buckets.csv (every metric, and the per-image slope's p-value as model_p)"))


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


def read_recorded(path: str | Path) -> pd.DataFrame:
    """A CSV of recorded runs (:data:`RECORDED_COLUMNS` and the metrics, one row per run and
    seed, all on one test set), checked: one error naming the file for anything else."""
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
    return runs


def recorded_comparisons(path: str | Path, pairs: list[list[str]]
                         ) -> tuple[pd.DataFrame, str]:
    """The seed-aware half of :func:`comparisons_table` from a CSV of recorded per-seed test
    means (one row per run: ``experiment``, ``seed`` (blank for a run that does not vary with
    it), ``kind`` (``trained`` or ``training-free``), ``test_images`` and the metrics), for runs
    no longer on disk or made on different machines on the same test images. ``floor`` in a pair
    is the training-free row with the best PSNR. The "this trained model" columns need the
    per-image files and stay blank."""
    return compare_recorded_runs(read_recorded(path), pairs, Path(path))


def compare_recorded_runs(runs: pd.DataFrame, pairs: list[list[str]], path: Path
                          ) -> tuple[pd.DataFrame, str]:
    """:func:`recorded_comparisons` of runs already read (:func:`read_recorded`) from ``path``."""
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


def comparisons_view(table: pd.DataFrame, names: dict[str, str] | None = None) -> pd.DataFrame:
    """comparisons.md: a − b with its seed-aware interval and Holm's verdict, per metric; ``names``
    maps a label back to its experiment's name (shorter: the labels are in experiments.md)."""
    names = names or {}
    digits = {"psnr": 2}
    return view(table, {
        "a": lambda r: names.get(r["a"], r["a"]), "b": lambda r: names.get(r["b"], r["b"]),
        "metric": "metric",
        "a − b": lambda r: f"{r['difference']:+.{digits.get(r['metric'], 4)}f}",
        "95 % interval": lambda r: interval(r["ci_low"], r["ci_high"],
                                            digits.get(r["metric"], 4)),
        "seed pairs": "seed_pairs", "Holm p": "p_holm",
        "distinguishable": lambda r: ("not claimable"
                                      if str(r["distinguishable"]).startswith("one seed pair")
                                      else r["distinguishable"]),
        "seeds to resolve": "seeds_to_resolve"})


COMPARISONS_NOTE = every_column("comparisons.csv (with the seed spread, the unadjusted p and, "
                                "as model_*, one seed pair's per-image interval and Wilcoxon "
                                "test: \"this trained model\")")
