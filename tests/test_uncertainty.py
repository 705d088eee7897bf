"""Intervals over seeds, paired comparisons and their corrections (ndmha.uncertainty)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ndmha.config import (
    ExperimentError,
    default_comparisons,
    first_runs,
    resolve_experiments,
    run_name,
)
from ndmha.__main__ import main
from ndmha.errors import DataError
from ndmha.tables import comparisons_table, recorded_comparisons
from ndmha.uncertainty import (
    UNSEEDED,
    crossing,
    holm,
    paired_difference,
    paired_means,
    seed_interval,
    seeds_to_resolve,
)


def _crossed(rng: np.random.Generator, mean: float, seeds: int, images: np.ndarray,
             seed_sd: float, noise_sd: float) -> dict[int, pd.Series]:
    """Per-image values of one configuration on fixed test images: its mean, a seed effect per
    run, the images' own difficulty (shared by every method) and per-(seed, image) noise."""
    ids = [f"{i:04d}" for i in range(len(images))]
    return {s: pd.Series(mean + rng.normal(0, seed_sd) + images
                         + rng.normal(0, noise_sd, len(images)), index=ids)
            for s in range(seeds)}


def test_the_seed_aware_interval_covers_a_known_difference_at_its_nominal_rate() -> None:
    """Two configurations 0.2 dB apart, seeds moving each by sd 0.15 dB, images by 2 dB (shared),
    noise 0.5 dB per image: over 2,000 simulated studies of 3 seeds x 200 images the 95 %
    interval covers 0.2 in 95 % of them. 2,000 replicates give the coverage estimate a standard
    error of sqrt(0.95 * 0.05 / 2000) = 0.0049, so [0.935, 0.965] is three of them either side
    (a fixed generator: the same draws on every machine). The per-image interval of one model
    pair ("this trained model"), which ignores seeds, covers far less often: the reason it is
    not the basis of "distinguishable"."""
    rng = np.random.default_rng(0)
    covered = per_image_covered = 0
    runs = 2000
    for _ in range(runs):
        images = rng.normal(0, 2.0, 200)
        a = _crossed(rng, 27.2, 3, images, 0.15, 0.5)
        b = _crossed(rng, 27.0, 3, images, 0.15, 0.5)
        result = paired_difference(a, b)
        covered += result["ci_low"] <= 0.2 <= result["ci_high"]
        per_image_covered += result["model_ci_low"] <= 0.2 <= result["model_ci_high"]
    # a 95 % interval over 2,000 studies: binomial sd sqrt(0.95 * 0.05 / 2000) = 0.49 %, so
    # +-1.5 % is about 3 sd (a false failure about 1 run in 400)
    assert 0.935 <= covered / runs <= 0.965
    # the per-image interval sees the image noise alone (half-width about 2 * 0.5 / sqrt(200) =
    # 0.07 dB) where one seed pair's difference moves by 0.15 * sqrt(2) = 0.21 dB: it can cover
    # the true 0.2 only in a minority of studies
    assert per_image_covered / runs < 0.6


def test_seed_interval_is_the_student_t_interval() -> None:
    values = [27.1, 27.5, 27.3]
    interval = seed_interval(values)
    half = stats.t.ppf(0.975, 2) * np.std(values, ddof=1) / np.sqrt(3)
    assert interval["mean"] == pytest.approx(27.3)
    assert interval["low"] == pytest.approx(27.3 - half) and interval["high"] == pytest.approx(
        27.3 + half)
    one = seed_interval([27.0])
    assert one["sd"] is None and one["low"] is None  # one seed: no interval


def test_paired_difference_pairs_seeds_and_a_single_run() -> None:
    ids = ["a", "b", "c", "d"]
    floor = {None: pd.Series([20.0, 21.0, 22.0, 23.0], index=ids)}
    model = {0: pd.Series([21.0, 22.0, 23.0, 24.0], index=ids),   # +1 on every image
             1: pd.Series([22.0, 23.0, 24.0, 25.0], index=ids)}   # +2
    result = paired_difference(model, floor)
    assert result["difference"] == pytest.approx(1.5) and result["seed_pairs"] == 2
    assert result["model_difference"] == pytest.approx(1.0)  # the first pair: seed 0
    single = paired_difference({None: model[0]}, floor)
    assert single["ci_low"] is None and single["p_seeds"] is None  # not claimable
    # a trained network of one seed against one of two: one pair (the seeds of the other are
    # not its own), so no interval, whichever side it is on and whether its seed is shared
    for one in ({0: model[0]}, {5: model[0]}, {UNSEEDED: model[0]}):
        for sides in ((one, model), (model, one)):
            result = paired_difference(*sides)
            assert result["seed_pairs"] == 1 and result["ci_low"] is None, (one.keys(), sides)
    with pytest.raises(ValueError, match="same test images"):
        paired_difference(model, {None: pd.Series([1.0, 2.0], index=["x", "y"])})


def test_recorded_means_give_the_per_image_comparisons(tmp_path) -> None:
    """The seed-aware half of a comparison from recorded per-seed means (runs of several
    sessions, no per-image files left) equals the one the workflow computes from the per-image
    files: on the same images the mean of the differences is the difference of the means. They
    differ only by float64 summation order: 200 terms near 30 dB, each sum off by at most
    200 * 30 * 2**-52 ≈ 1.3e-12, so 1e-9 is a bound, not a fit."""
    rng = np.random.default_rng(1)
    images = rng.normal(0, 2.0, 200)
    configurations = {"net": _crossed(rng, 26.2, 3, images, 0.1, 0.5),
                      "unet": _crossed(rng, 27.2, 3, images, 0.1, 0.5),
                      "floor_a": {None: _crossed(rng, 28.3, 1, images, 0, 0.3)[0]},
                      "floor_b": {None: _crossed(rng, 27.0, 1, images, 0, 0.3)[0]}}
    per_image, runs, summaries, recorded = {}, {}, [], []
    for name, seeds in configurations.items():
        kind = "training-free" if None in seeds else "trained"
        for seed, values in seeds.items():
            run = name if seed is None else f"{name}.seed{seed}"
            path = tmp_path / f"{run}.csv"
            frame = pd.DataFrame({"id": values.index, "psnr": values.to_numpy(),
                                  "ssim": values.to_numpy() / 40, "l1": 1 / values.to_numpy(),
                                  "lpips": np.nan})
            frame.to_csv(path, index=False)
            per_image[run] = path
            runs[run] = {"seed": seed, "trained": kind == "trained", "group": name}
            recorded.append({"experiment": name, "seed": seed, "kind": kind, "test_images": 200,
                             **frame[["psnr", "ssim", "l1"]].mean().to_dict()})
        summaries.append({"experiment": name, "kind": kind,
                          "psnr": float(np.mean([v.mean() for v in seeds.values()]))})
    pd.DataFrame(recorded).to_csv(tmp_path / "runs.csv", index=False)
    pairs = [["net", "unet"], ["net", "floor"], ["unet", "floor"]]
    full, _ = comparisons_table(pairs, per_image, summaries, runs)
    short, note = recorded_comparisons(tmp_path / "runs.csv", pairs)
    assert "runs.csv" in note and len(full) == len(short) == 9  # 3 pairs x psnr, ssim, l1
    assert set(short.b) == {"unet", "floor_a"}  # the floor: the better training-free row
    for column in ("difference", "seed_sd", "ci_low", "ci_high", "p_seeds", "p_holm"):
        assert np.allclose(full[column].astype(float), short[column].astype(float),
                           rtol=0, atol=1e-9), column
    assert list(full.distinguishable) == list(short.distinguishable)
    assert short.model_difference.isna().all()  # "this trained model" needs per-image files
    # a direct pair of means
    assert paired_means({0: 2.0, 1: 3.0}, {None: 1.0})["difference"] == pytest.approx(1.5)


@pytest.mark.parametrize("rows, match", [
    ("experiment,seed,kind,psnr\nnet,0,trained,26\n", "columns"),
    ("experiment,seed,kind,test_images,psnr\nnet,0,trained,200,26\nnet,0,trained,200,27\n",
     "recorded twice"),
    ("experiment,seed,kind,test_images,psnr\nnet,0,trained,200,26\nb,,training-free,40,27\n",
     "different test sets"),
    ("experiment,seed,kind,test_images,psnr\nnet,0,trained,200,26\n", "needs a training-free"),
    ("experiment,seed,kind,test_images,psnr\nnt,0,trained,200,26\nb,,training-free,200,27\n",
     "no recorded run of \\['net'\\]"),
])
def test_recorded_runs_that_cannot_be_paired_name_the_file(tmp_path, capsys, rows, match) -> None:
    """Bad recorded runs: one error naming the file, from the function and from the command."""
    path = tmp_path / "runs.csv"
    path.write_text(rows)
    with pytest.raises(DataError, match=match) as error:
        recorded_comparisons(path, [["net", "floor"]])
    assert "runs.csv" in str(error.value)
    assert main(["compare-recorded", str(path), "--pair", "net", "floor"]) == 2
    assert capsys.readouterr().err.startswith(f"ndmha compare-recorded: error: {path}")


def test_compare_recorded_prints_the_seed_aware_table(tmp_path, capsys) -> None:
    path = tmp_path / "runs.csv"
    path.write_text("# a comment line\nexperiment,seed,kind,test_images,psnr,ssim\n"
                    "net,0,trained,200,26.0,0.80\nnet,1,trained,200,26.4,0.82\n"
                    "bih,,training-free,200,28.0,0.88\n")
    assert main(["compare-recorded", str(path), "--pair", "net", "floor",
                 "--metric", "psnr"]) == 0
    out = capsys.readouterr().out
    header, _, *body = [[c.strip() for c in line.strip("|").split("|")]
                        for line in out.splitlines() if line.startswith("|")]
    assert len(body) == 1 and not any(c.startswith("model_") for c in header)
    row = dict(zip(header, body[0]))
    # 2.0 and 1.6 dB under the floor: mean -1.8, sd 0.283, t(0.975, 1) = 12.71 -> ±2.54
    assert (row["a"], row["b"], row["metric"], row["seed pairs"]) == ("net", "bih", "psnr", "2")
    assert (row["a − b"], row["95 % interval"]) == ("-1.80", "-4.34 to +0.74")
    assert row["distinguishable"] == "no"


def test_holm_steps_down() -> None:
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([None, 0.02]) == [None, 0.02]


def test_seeds_to_resolve() -> None:
    # sd 0.3 between seeds, 0.3 dB apart: t(0.975, n-1) * 0.3 / sqrt(n) < 0.3 first at n = 7
    assert seeds_to_resolve(0.3, 0.3) == 7
    assert seeds_to_resolve(None, 0.3) is None


def test_seeds_expand_trained_experiments_only() -> None:
    config = {"seeds": [0, 1, 2], "loss": {"baseline": {"l1": 1.0}, "ndmha": {"l1": 1.0}},
              "experiments": {"baseline": {"architecture": "baseline"},
                              "ndmha": {"architecture": "ndmha", "seeds": [5]},
                              "telea": {"architecture": "telea"},
                              "ablated": {"architecture": "ndmha", "reference": "ndmha",
                                          "options": {"window": None}}}}
    experiments = resolve_experiments(config)
    assert list(experiments) == [run_name("baseline", s) for s in (0, 1, 2)] + [
        "ndmha.seed5", "telea"] + [run_name("ablated", s) for s in (0, 1, 2)]
    assert experiments["baseline.seed1"].train["seed"] == 1
    assert experiments["baseline.seed1"].group == "baseline"
    assert experiments["telea"].seed is None
    assert first_runs(experiments) == ["baseline.seed0", "ndmha.seed5", "telea",
                                       "ablated.seed0"]
    assert default_comparisons(experiments) == [
        ["ablated", "ndmha"], ["ndmha", "baseline"], ["baseline", "floor"], ["ndmha", "floor"],
        ["ablated", "floor"]]
    unseeded = resolve_experiments({k: v for k, v in config.items() if k != "seeds"})
    assert "baseline" in unseeded and unseeded["baseline"].seed is None  # today's names


def test_networks_are_compared_with_the_u_net_at_their_own_budget() -> None:
    """With a U-Net at a longer budget first and one at the networks' budget second (the
    study's), NDMHA and the released network are set against the second; without such a U-Net,
    against the first."""
    loss = {"baseline": {"l1": 1.0}, "ndmha": {"l1": 1.0}, "ndmha_released": {"l1": 1.0}}
    experiments = {"baseline": {"architecture": "baseline", "train": {"epochs": 32}},
                   "baseline_short": {"architecture": "baseline"},
                   "ndmha": {"architecture": "ndmha"},
                   "ndmha_released": {"architecture": "ndmha_released"},
                   "ndmha_long": {"architecture": "ndmha", "train": {"epochs": 32}}}
    config = {"seeds": [0, 1], "loss": loss, "experiments": experiments}
    pairs = default_comparisons(resolve_experiments(config))
    assert ["ndmha", "baseline_short"] in pairs and ["ndmha_released", "baseline_short"] in pairs
    assert ["ndmha_long", "baseline"] in pairs
    del experiments["baseline_short"]
    pairs = default_comparisons(resolve_experiments(config))
    assert ["ndmha", "baseline"] in pairs and ["ndmha_released", "baseline"] in pairs


def test_only_keeps_a_part_of_the_study_and_its_pairs() -> None:
    """``only`` drops the other experiments (and the pairs they were in), keeps the seeds of the
    ones named, and names itself when it names no experiment."""
    loss = {"baseline": {"l1": 1.0}, "ndmha": {"l1": 1.0}, "ndmha_released": {"l1": 1.0}}
    experiments = {"biharmonic": {"architecture": "biharmonic"},
                   "baseline": {"architecture": "baseline"},
                   "ndmha": {"architecture": "ndmha"},
                   "ndmha_l1": {"architecture": "ndmha", "reference": "ndmha"},
                   "ndmha_released": {"architecture": "ndmha_released"}}
    config = {"seeds": [0, 1], "loss": loss, "experiments": experiments,
              "only": ["biharmonic", "baseline", "ndmha_released", "ndmha_l1"]}
    runs = resolve_experiments(config)
    assert list(runs) == ["biharmonic", "baseline.seed0", "baseline.seed1", "ndmha_l1.seed0",
                          "ndmha_l1.seed1", "ndmha_released.seed0", "ndmha_released.seed1"]
    pairs = default_comparisons(runs)
    assert ["ndmha_released", "baseline"] in pairs and ["ndmha_l1", "floor"] in pairs
    assert not [p for p in pairs if "ndmha" in p]  # its reference left out: no pair with it
    with pytest.raises(ExperimentError) as err:
        resolve_experiments({**config, "only": ["baseline", "unet"]})
    assert err.value.key == "only" and "'unet'" in err.value.message


def _line(steps: np.ndarray, start: float, slope_per_1000: float) -> pd.Series:
    return pd.Series(start + slope_per_1000 * steps / 1000, index=steps)


def test_crossing_finds_the_step_where_the_mean_curve_passes() -> None:
    """Two seeds rising 0.5 dB per 1,000 steps from 1.2 and 0.9 dB under a flat b: their mean
    gap −1.05 + 0.5 k (k thousand steps) passes 0 at 2,100 steps, the first logged step above is
    2,250; the seeds' own at 2,500 (from 2,400) and 2,000 (from 1,800)."""
    steps = np.arange(250, 4001, 250)
    a = {0: _line(steps, -1.2, 0.5), 1: _line(steps, -0.9, 0.5)}
    b = {0: _line(steps, 0.0, 0.0), 1: _line(steps, 0.0, 0.0)}
    result = crossing(a, b)
    assert result["crossing_step"] == 2250 and result["pair_crossings"] == [2500, 2000]
    # a curve that dips below again later has not passed until it stays above
    a[0] = a[0].where(a[0].index != 3000, -1.0)
    assert crossing(a, b)["crossing_step"] == 3250


def test_crossing_absent_reports_the_trend_and_the_budget_it_implies() -> None:
    steps = np.arange(250, 8001, 250)
    a = {s: _line(steps, -3.0 + 0.1 * s, 0.2 + 0.02 * s) for s in range(3)}
    b = {s: _line(steps, 0.0, 0.0) for s in range(3)}
    result = crossing(a, b)
    assert result["crossing_step"] is None and result["pair_crossings"] == [None, None, None]
    # exact lines: each pair's slope is its own (0.20, 0.22, 0.24 dB per 1,000 steps)
    assert result["slope_per_1000"] == pytest.approx(0.22, abs=1e-9)
    # the 95 % Student-t interval over the three pairs: sd 0.02, t(0.975, 2 df) = 4.303
    half = stats.t.ppf(0.975, 2) * 0.02 / math.sqrt(3)
    assert (result["slope_low"], result["slope_high"]) == pytest.approx((0.22 - half,
                                                                         0.22 + half), abs=1e-9)
    assert result["seed_pairs"] == 3
    gap = float(np.mean([-3.0 + 0.1 * s + (0.2 + 0.02 * s) * 8 for s in range(3)]))
    assert result["last_gap"] == pytest.approx(gap, abs=1e-9)
    assert result["closes_at_step"] == 8000 + math.ceil(-gap / 0.22e-3)
    # the level over the last 2,000 steps: each pair's line averaged over steps 6,000 ... 8,000
    levels = [-3.0 + 0.1 * s + (0.2 + 0.02 * s) * 7 for s in range(3)]
    assert result["window_gap"] == pytest.approx(np.mean(levels), abs=1e-9)
    half = stats.t.ppf(0.975, 2) * np.std(levels, ddof=1) / math.sqrt(3)
    assert (result["window_gap_low"], result["window_gap_high"]) == pytest.approx(
        (np.mean(levels) - half, np.mean(levels) + half), abs=1e-9)
    shrinking = crossing({0: _line(steps, -1.0, -0.1)}, {0: _line(steps, 0.0, 0.0)})
    assert shrinking["closes_at_step"] is None and shrinking["slope_low"] is None  # one pair


def test_crossing_command_draws_the_curves_with_the_floor(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    """The recorded curves (docs/curves' form: steps, val_psnr, an SSIM column that may be
    blank) in, the verdict line and a figure out; a malformed --floor is named."""
    from ndmha.__main__ import main
    from ndmha.io import read_image

    steps = np.arange(250, 4001, 250)
    for name, start, slope in (("a", 24.0, 1.0), ("b", 26.0, 0.2)):
        pd.DataFrame({"steps": steps, "val_psnr": _line(steps, start, slope).to_numpy(),
                      "val_ssim": ""}).to_csv(tmp_path / f"{name}.csv", index=False)
    args = ["crossing", "--a", str(tmp_path / "a.csv"), "--b", str(tmp_path / "b.csv"),
            "--figure", str(tmp_path / "c.png"), "--labels", "NDMHA", "U-Net",
            "--floor", "biharmonic=28.45"]
    assert main(args) == 0
    # a (24 + k) passes b (26 + 0.2 k) at k = 2.5: the first logged step above is 2,750
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("a passes b at step 2,750")
    assert lines[1].startswith("a − b at step 4,000: +1.20 dB") and "1 seed pair" in lines[1]
    image = read_image(tmp_path / "c.png")
    assert image.shape[1] > 400 and image.std() > 10  # drawn, not blank
    assert main(args[:-1] + ["biharmonic=high"]) == 2
    assert "--floor 'biharmonic=high': expected LABEL=PSNR" in capsys.readouterr().err


def test_the_gap_by_hole_size_and_its_trend() -> None:
    """Gaps linear in the hole ratio: each seed pair's trend is its slope exactly (the bucket
    means of a linear gap lie on its line), per 0.1 of hole ratio; the interval is Student's
    over the seed pairs' slopes; the first pair's per-image slope is linregress's."""
    from ndmha.data.masks import bucket_label
    from ndmha.uncertainty import TREND_STEP, gap_by_hole, t_interval

    ratios = np.linspace(0.02, 0.58, 57)
    ids = [f"{i:03d}" for i in range(len(ratios))]

    def frame(values: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame({"psnr": values, "hole_ratio": ratios,
                             "bucket": [bucket_label(r) for r in ratios]}, index=ids)

    slopes = {0: -2.0, 1: -1.0, 2: -3.5}  # dB per unit hole ratio, one a seed
    a = {s: frame(30.0 + s + slope * ratios) for s, slope in slopes.items()}
    b = {s: frame(np.full(len(ratios), 29.0 + s)) for s in slopes}
    found = gap_by_hole(a, b, "psnr")
    expected = t_interval([slope * TREND_STEP for slope in slopes.values()])
    trend = found["trend"]
    assert trend["difference"] == pytest.approx(expected["mean"], abs=1e-9)
    assert (trend["ci_low"], trend["ci_high"]) == pytest.approx((expected["low"],
                                                                 expected["high"]), abs=1e-9)
    assert trend["model_difference"] == pytest.approx(slopes[0] * TREND_STEP, abs=1e-9)
    assert [r["bucket"] for r in found["buckets"]] == ["0-10%", "10-20%", "20-30%", "30-40%",
                                                       "40-50%", "50-60%"]
    first = found["buckets"][0]  # 0-10 %: the mean ratio of its images, on every seed's line
    inside = ratios[ratios < 0.1]
    gaps = [1.0 + slope * inside.mean() for slope in slopes.values()]
    assert first["difference"] == pytest.approx(np.mean(gaps)) and first["images"] == len(inside)
    # one seed pair: no interval over seeds, the images' interval still there
    one = gap_by_hole({0: a[0]}, {0: b[0]}, "psnr")["trend"]
    assert one["ci_low"] is None and one["seed_pairs"] == 1
    assert one["model_ci_low"] == pytest.approx(one["model_ci_high"], abs=1e-9)  # no noise
