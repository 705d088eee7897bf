"""Uncertainty of the tables' numbers: seeds, intervals and paired comparisons.

Every seed of an experiment is scored on the same test images and masks (crossed, not nested), so
two sources move a number: the seed (initialisation, data order, training masks) and the images.

- **An experiment's interval** (:func:`seed_interval`): the 95 % Student-t interval over the
  per-seed means, ``mean ± t(0.975, n - 1) · sd / sqrt(n)``. It answers "where would the mean
  over many training runs of this configuration fall, on this test set". Honest at three seeds:
  each per-seed mean averages hundreds of images, so it is close to normal, and the t quantile
  with 2 degrees of freedom (4.30) pays for estimating the spread from three values. A bootstrap
  over three seeds has 10 distinct resamples and its percentile interval never leaves the range
  of the three values: it under-covers (about 75 % at best). Image sampling is not in it: every
  row is scored on the same images, so a different test set would move all rows together; the
  paired comparisons below are where images matter. FID and KID get the spread over seeds only
  (resampling images would duplicate them inside one distribution, which biases both).
- **A paired comparison** (:func:`paired_difference`): a − b per image, on the same images and
  masks; its mean over images for each seed pair (seeds matched by value where both have them,
  a run that does not vary with the seed, e.g. the floor, paired with each of the other's), and
  the seed-aware 95 % t-interval over those per-seed differences: the only basis of
  "distinguishable". Separately, labelled "this trained model", the first pair's per-image
  differences: their t-interval over images and the Wilcoxon signed-rank test, which say whether
  *these two trained models* differ on this test set, not whether the configurations do (200
  images can separate two models that a change of seed moves by more than their difference).
- **Recorded runs** (:func:`paired_means`; ``python -m ndmha compare-recorded``): the seed-aware
  half from per-seed means alone, for runs of several sessions whose per-image files are gone
  (on the same images the mean of the differences is the difference of the means).
- **Several comparisons**: Holm's step-down correction of the seed-level t-tests' p-values
  (:func:`holm`; scipy has none, and statsmodels is not a dependency for six lines).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy import stats

LEVEL = 0.95
#: the key of a trained run without ``seeds`` in a paired comparison: one seed of its own, never
#: broadcast over the other side's seeds as a training-free run (key None) is
UNSEEDED = "unseeded"
#: metrics with a seed interval (the per-image ones); FID and KID get the spread only
INTERVAL_METRICS = ("psnr", "ssim", "l1", "lpips")
SPREAD_METRICS = ("fid", "fid_clean", "kid")
METHOD_NOTE = (
    "Intervals: 95 % Student-t over the per-seed means (mean ± t(0.975, n−1)·sd/√n, n seeds), on "
    "this test set: the seeds' spread, not the images' (every row is scored on the same images); "
    "FID (both implementations) and KID: the spread over seeds only. One seed: no interval. Paired comparisons: a − b per "
    "image on the same images and masks; 'distinguishable' comes from the seed-aware interval "
    "over per-seed mean differences only (Holm-corrected over the comparisons made); the "
    "'this trained model' columns (per-image t-interval, Wilcoxon signed-rank) concern the first "
    "seed's two models alone.")


def t_interval(values: Sequence[float], level: float = LEVEL) -> dict[str, Any]:
    """Mean, sample sd and the Student-t interval of ``values`` (sd and interval None for fewer
    than two values)."""
    x = np.asarray(values, dtype=np.float64)
    n = len(x)
    mean = float(x.mean()) if n else math.nan
    if n < 2:
        return {"mean": mean, "sd": None, "low": None, "high": None, "n": n}
    sd = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return {"mean": mean, "sd": sd, "low": mean - half, "high": mean + half, "n": n}


def seed_interval(values: Sequence[float]) -> dict[str, Any]:
    """An experiment's metric over its seeds: mean, spread between seeds and 95 % interval."""
    return t_interval(values)


def seeds_to_resolve(sd: float | None, difference: float, limit: int = 1000) -> int | None:
    """The fewest seeds whose t-interval (at this seed-to-seed ``sd``) would exclude 0 for this
    mean ``difference``: what a study would need to resolve it (None: unknown or > limit)."""
    if sd is None or not math.isfinite(sd) or difference == 0:
        return None
    if sd == 0:
        return 2
    for n in range(2, limit + 1):
        if float(stats.t.ppf(0.5 + LEVEL / 2, n - 1)) * sd / math.sqrt(n) < abs(difference):
            return n
    return None


def _pairs(a: dict[Any, Any], b: dict[Any, Any]) -> list[tuple[Any, Any]]:
    """Seed pairs: matched by seed value; a run that does not vary with the seed (its key None:
    training-free, imported, external) paired with each run of the other; otherwise in order.
    A trained side of one seed beside three gives one pair, not three: the other side's seeds
    do not stand in for its own (they would give an interval without its seed spread)."""
    if list(b) == [None]:
        return [(x, b[None]) for x in a.values()]
    if list(a) == [None]:
        return [(a[None], y) for y in b.values()]
    common = [s for s in a if s in b]
    if common:
        return [(a[s], b[s]) for s in common]
    return list(zip(a.values(), b.values()))


def seed_difference(per_seed: Sequence[float]) -> dict[str, Any]:
    """The seed-level half of a paired comparison: the mean of the per-seed-pair differences,
    their sd, the 95 % t-interval and the one-sample t-test's p-value (None with one pair)."""
    seeds = t_interval(per_seed)
    p_seed = (float(stats.ttest_1samp(per_seed, 0.0).pvalue)
              if len(per_seed) > 1 and (seeds["sd"] or 0) > 0 else None)
    return {"difference": seeds["mean"], "seed_pairs": len(per_seed), "seed_sd": seeds["sd"],
            "ci_low": seeds["low"], "ci_high": seeds["high"], "p_seeds": p_seed}


def paired_means(a: dict[Any, float], b: dict[Any, float]) -> dict[str, Any]:
    """a − b from per-seed *means* on the same test images (seed keys as in
    :func:`paired_difference`): on the same images a seed pair's mean per-image difference is the
    difference of its two means, so the seed-aware half of a comparison needs no per-image
    files; the "this trained model" half does, and is absent here."""
    return seed_difference([float(x) - float(y) for x, y in _pairs(a, b)])


def paired_difference(a: dict[Any, pd.Series], b: dict[Any, pd.Series]
                      ) -> dict[str, Any]:
    """a − b for one metric: ``a`` and ``b`` map each run's seed (None for a run that does not
    vary with the seed; :data:`UNSEEDED` for a trained run without seeds) to its
    per-image values indexed by test id. Returns the mean difference, the seed-aware interval
    and t-test p-value over per-seed differences (None with one pair), and the first pair's
    per-image interval and Wilcoxon p-value ("this trained model")."""
    pairs = _pairs(a, b)
    for x, y in pairs:
        if not x.index.equals(y.index) and set(x.index) != set(y.index):
            raise ValueError("a paired comparison needs the same test images on both sides")
    result = seed_difference([float((x - y.reindex(x.index)).mean()) for x, y in pairs])
    x, y = pairs[0]
    per_image = (x - y.reindex(x.index)).to_numpy(dtype=np.float64)
    images = t_interval(per_image)
    nonzero = per_image[per_image != 0]
    p_images = float(stats.wilcoxon(nonzero).pvalue) if len(nonzero) > 0 else 1.0
    return {**result, "model_difference": images["mean"], "model_ci_low": images["low"],
            "model_ci_high": images["high"], "model_wilcoxon_p": p_images,
            "images": len(per_image)}


#: the trend's unit: the change of a gap over this much more of the image missing
TREND_STEP = 0.1


def gap_by_hole(a: dict[Any, pd.DataFrame], b: dict[Any, pd.DataFrame], metric: str
                ) -> dict[str, Any]:
    """How a − b changes with the holes' size. ``a`` and ``b`` map seeds (as in
    :func:`paired_difference`) to per-image frames with ``metric``, ``hole_ratio`` and ``bucket``,
    indexed by test id. Per seed pair: the gap's mean in each hole-ratio bucket, and the
    least-squares slope of those means over the buckets' mean hole ratios (every bucket weighs
    the same: a bucket of few images moves it as much as a full one, as a table of buckets
    reads). Returns per bucket the seed-mean gap with its 95 % t-interval over seed pairs and
    the first pair's per-image mean and interval; and the trend: the slope per
    :data:`TREND_STEP` of hole ratio, its t-interval over seed pairs (none with one pair), and
    the first pair's per-image slope (``scipy.stats.linregress`` of the gap on the hole ratio)
    with its interval and p-value ("this trained model")."""
    pairs = _pairs(a, b)
    gaps = [x.assign(gap=x[metric] - y[metric].reindex(x.index)) for x, y in pairs]
    order = sorted(gaps[0]["bucket"].unique(), key=lambda k: gaps[0].loc[
        gaps[0]["bucket"] == k, "hole_ratio"].mean())
    buckets, slopes = [], []
    for gap in gaps:
        means = gap.groupby("bucket").agg(gap=("gap", "mean"), ratio=("hole_ratio", "mean"))
        slopes.append(float(np.polyfit(means["ratio"], means["gap"], 1)[0]) * TREND_STEP
                      if len(means) >= 2 else math.nan)
    for bucket in order:
        per_seed = [float(g.loc[g["bucket"] == bucket, "gap"].mean()) for g in gaps]
        first = gaps[0].loc[gaps[0]["bucket"] == bucket, "gap"].to_numpy(np.float64)
        seeds, images = t_interval(per_seed), t_interval(first)
        buckets.append({"bucket": bucket, "images": len(first), "difference": seeds["mean"],
                        "ci_low": seeds["low"], "ci_high": seeds["high"],
                        "seed_pairs": len(per_seed), "model_difference": images["mean"],
                        "model_ci_low": images["low"], "model_ci_high": images["high"]})
    first = gaps[0].dropna(subset=["gap"])
    fit = stats.linregress(first["hole_ratio"], first["gap"])
    half = float(stats.t.ppf(0.5 + LEVEL / 2, len(first) - 2)) * fit.stderr
    seeds = t_interval([x for x in slopes if math.isfinite(x)])
    return {"buckets": buckets, "trend": {
        "difference": seeds["mean"], "ci_low": seeds["low"], "ci_high": seeds["high"],
        "seed_pairs": seeds["n"], "images": len(first),
        "model_difference": fit.slope * TREND_STEP, "model_ci_low": (fit.slope - half) * TREND_STEP,
        "model_ci_high": (fit.slope + half) * TREND_STEP, "model_p": float(fit.pvalue)}}


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values (None stays None and does not count)."""
    given = [(p, i) for i, p in enumerate(pvalues) if p is not None]
    adjusted: list[float | None] = [None] * len(pvalues)
    running, m = 0.0, len(given)
    for rank, (p, i) in enumerate(sorted(given)):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def _passes(gap: pd.Series) -> int | None:
    """The first step from which ``gap`` (indexed by step) stays above 0 to its end."""
    below = gap.index[gap <= 0]
    after = gap.index[gap.index > below.max()] if len(below) else gap.index
    return int(after[0]) if len(after) else None


def crossing(a: dict[Any, pd.Series], b: dict[Any, pd.Series], window: int = 2000
             ) -> dict[str, Any]:
    """Where network a's validation curve passes b's. ``a`` and ``b`` map a seed to its
    validation PSNR indexed by optimizer step (seeds paired as :func:`paired_difference` pairs
    them; the steps both curves share). The crossing is the first step from which the mean over
    seed pairs of a − b stays above 0, with each pair's own crossing step (None: not within its
    steps). Without one, the trend says what budget would be needed: each pair's least-squares
    slope of a − b over its last ``window`` steps, in dB per 1,000 steps, their mean and 95 %
    t-interval over pairs, and the steps at which the mean gap would close at the mean slope
    (None when it is not closing). Whatever the crossing, the level over the same window: each
    pair's mean gap there, their mean and 95 % t-interval (a curve that passes at its last
    point, or dips under at it, reads as what it is: level or not)."""
    gaps = []
    for x, y in _pairs(a, b):
        common = x.index.intersection(y.index)
        if len(common) < 2:
            raise ValueError("a crossing needs curves on at least two common steps")
        gaps.append((x[common] - y[common]).sort_index())
    mean_gap = pd.concat(gaps, axis=1).dropna().mean(axis=1)
    slopes, levels = [], []
    for gap in gaps:
        recent = gap[gap.index >= gap.index.max() - window]
        slopes.append(float(stats.linregress(recent.index.to_numpy(dtype=np.float64),
                                             recent.to_numpy(dtype=np.float64)).slope) * 1000
                      if len(recent) >= 2 else float("nan"))
        levels.append(float(recent.mean()))
    trend, level = t_interval(slopes), t_interval(levels)
    last_step, last_gap = int(mean_gap.index[-1]), float(mean_gap.iloc[-1])
    closes = (last_step + math.ceil(-last_gap / (trend["mean"] / 1000))
              if last_gap <= 0 and trend["mean"] > 0 else None)
    return {"crossing_step": _passes(mean_gap), "pair_crossings": [_passes(g) for g in gaps],
            "last_step": last_step, "last_gap": last_gap, "seed_pairs": len(gaps),
            "slope_per_1000": trend["mean"], "slope_low": trend["low"],
            "slope_high": trend["high"], "closes_at_step": closes,
            "window_gap": level["mean"], "window_gap_low": level["low"],
            "window_gap_high": level["high"]}
