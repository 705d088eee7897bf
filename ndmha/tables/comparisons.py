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
