"""The reproduction scorecard: one row a claim of the paper or the seed report, the figure this run
measured, its budget, and a verdict that follows from the numbers: **reproduced**, **not
reproduced** (with the interval), or **not testable here** (with what would make it testable).

A count (parameters, GMAC) is reproduced when it lies within the precision the claim is quoted
to (half a unit of its last digit); GMAC depends on how a tool counts the deformable convs, so the
claim is reproduced when it lies between our two counts (with and without them). A difference
(an ablation, one network against another) is reproduced when its seed-aware 95 % interval lies
on the claimed side of 0, not reproduced when it does not (on the other side, or across 0: not
resolved), and not testable with one seed pair; a ranking needs the other methods' outputs on
the same masks of the claim's protocol (``data.protocol``: celebahq-qdimd or places2-nvidia). A
score on CelebA-HQ needs that protocol at the claimed budget (on the embedded demo it is not
testable) and is reproduced when its 95 % interval over seeds reaches the claim or lies above it
(one seed: within :data:`SCORE_MARGIN_DB` or above). :func:`rules` says all of it in words, with
the numbers, for the tables and the report.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from ndmha.errors import DataError
from ndmha.tables.comparisons import compare_recorded_runs, read_recorded
from ndmha.tables.floor import FLOOR_MARGIN_DB
from ndmha.tables.format import every_column, interval, view
from ndmha.tables.rows import aggregate, budget_of, gmacs, is_trained, kind_of
from ndmha.uncertainty import INTERVAL_METRICS, LEVEL, SPREAD_METRICS

REPRODUCED, NOT_REPRODUCED, NOT_TESTABLE = "reproduced", "not reproduced", "not testable here"
COLUMNS = ["claim_id", "source", "claim", "quoted", "measured", "budget", "verdict", "why",
           "experiments"]
#: the options that make an NDMHA experiment an ablation rather than the paper's network
ABLATIONS = {"deformable": False, "nested": False, "coarse_stage": False}
#: the paper's budget in images seen (200 epochs of 27,000 images at batch 1)
PAPER_IMAGES_SEEN = 5_400_000
CELEBAHQ_NEEDS = ("CelebA-HQ with the QD-IMD masks (configs/paper_celebahq.yaml: "
                  "data.images_dir, data.masks_dir)")
#: a single seed's score within this of the claim (or above it) reproduces it: the floor's
#: one-seed margin, the smallest PSNR difference the study reads as more than seed noise
SCORE_MARGIN_DB = FLOOR_MARGIN_DB
PLACES2_NEEDS = ("Places2 with the NVIDIA test masks (configs/paper_places2.yaml: "
                 "data.places2.root, data.masks_dir)")


@dataclass(frozen=True)
class Finding:
    measured: str
    budget: str
    verdict: str
    why: str
    experiments: tuple[str, ...] = ()


@dataclass(frozen=True)
class Claim:
    """One claim, in words and as quoted, and the test that reads a run's tables for it."""
    claim_id: str
    source: str
    claim: str
    quoted: str
    test: Callable[["Evidence"], Finding]


@dataclass
class Evidence:
    """What the scorecard reads: the run's experiments (merged over seeds) and its paired
    comparisons (``a``, ``b`` by experiment name; a − b)."""
    summaries: list[dict]
    comparisons: pd.DataFrame

    def find(self, architecture: str, ablation: dict | None = None) -> list[dict]:
        """The experiments of an architecture, the paper's network (no ablation option) unless
        ``ablation`` names the option that sets it apart; trained ones first."""
        def matches(s: dict) -> bool:
            options = s.get("options") or {}
            off = {k: v for k, v in ABLATIONS.items() if options.get(k, True) is v}
            if "window" in options and options["window"] is None:
                off["window"] = None
            return s["architecture"] == architecture and off == (ablation or {})
        found = [s for s in self.summaries if s.get("architecture") and matches(s)]
        return sorted(found, key=lambda s: (not is_trained(s), s["experiment"] != architecture))

    def difference(self, a: str, b: str, metric: str = "psnr") -> dict | None:
        """a − b from the comparisons, whichever way round they were made."""
        table = self.comparisons
        if table.empty:
            return None
        for first, second, sign in ((a, b, 1), (b, a, -1)):
            rows = table[(table.a == first) & (table.b == second) & (table.metric == metric)]
            if len(rows):
                row = rows.iloc[0]
                low, high = row["ci_low"], row["ci_high"]
                if sign < 0:
                    low, high = (None if pd.isna(high) else -high), (None if pd.isna(low)
                                                                      else -low)
                return {"difference": sign * row["difference"], "low": low, "high": high,
                        "pairs": row["seed_pairs"]}
        return None


def _steps(s: dict) -> str:
    budget = budget_of(s)
    if not is_trained(s):
        return budget["train_device"]
    return f"{budget['steps']:,} steps at batch {budget['batch']}, {budget['train_time_s']:.0f} s" \
        f" on {budget['train_device']}" if budget["train_time_s"] is not None else \
        f"{budget['steps']:,} steps at batch {budget['batch']}"


def _seeds(s: dict) -> str:
    n = len(s.get("seeds", [])) or 1
    return f"{n} seed{'s' if n > 1 else ''}"


def _within(value: float, quoted: float, precision: float) -> bool:
    return abs(value - quoted) <= precision / 2 + 1e-12


def _on_celebahq(s: dict) -> bool:
    return s.get("protocol") == "celebahq-qdimd"


def _on_places2(s: dict) -> bool:
    return s.get("protocol") == "places2-nvidia"


def _sign_verdict(diff: dict | None, claimed_positive: bool, what: str,
                  missing: str) -> tuple[str, str, str]:
    """(measured, verdict, why) of a claim that a difference is above 0 (or below)."""
    if diff is None:
        return "", NOT_TESTABLE, missing
    text = f"{diff['difference']:+.2f} dB"
    if pd.isna(diff["low"]) or pd.isna(diff["high"]):
        return text, NOT_TESTABLE, (f"{what}: one seed pair, no interval; run two or more "
                                    "seeds (seeds: [0, 1, 2])")
    text += f" ({interval(diff['low'], diff['high'])})"
    low, high = (diff["low"], diff["high"]) if claimed_positive else (-diff["high"], -diff["low"])
    if low > 0:
        return text, REPRODUCED, f"{what}: the 95 % interval over seeds lies on the claimed side"
    side = "on the other side of 0" if high < 0 else "across 0: not resolved"
    return text, NOT_REPRODUCED, f"{what}: the 95 % interval over seeds lies {side}"


def _parameters(quoted: float, precision: float, architectures: tuple[str, ...],
                exact: bool = False) -> Callable[[Evidence], Finding]:
    def test(ev: Evidence) -> Finding:
        found = [(a, ev.find(a)) for a in architectures]
        found = [(a, f[0]) for a, f in found if f]
        if not found:
            return Finding("", "", NOT_TESTABLE, f"add an experiment of {architectures[0]}")
        parts = [f"{a} {s['parameters'] / 1e6:.3f} M" if not exact
                 else f"{a} {s['parameters']:,}" for a, s in found]
        hits = [a for a, s in found if (s["parameters"] == quoted if exact else
                                        _within(s["parameters"] / 1e6, quoted, precision))]
        why = (f"{', '.join(hits)} within the quoted precision" if hits else
               "outside the quoted precision (" + ("exact" if exact else f"±{precision / 2:g} M")
               + ")")
        return Finding("; ".join(parts), "counted from the built network", REPRODUCED if hits
                       else NOT_REPRODUCED, why, tuple(s["experiment"] for _, s in found))
    return test


def _gmac(ev: Evidence) -> Finding:
    found = ev.find("ndmha")
    if not found:
        return Finding("", "", NOT_TESTABLE, "add an experiment of ndmha")
    s = found[0]
    counts = gmacs(s, 256)
    with_d, without = counts["gmac"], counts["gmac_without_deformable"]
    inside = min(with_d, without) - 0.005 <= 15.01 <= max(with_d, without) + 0.005
    return Finding(f"{with_d:.2f} (deformable counted), {without:.2f} (not)",
                   "one forward pass at 256 px", REPRODUCED if inside else NOT_REPRODUCED,
                   "the claim lies between our two counting conventions" if inside else
                   "outside both counting conventions", (s["experiment"],))


def _score(architecture: str, quoted: float, images_seen: int | None, who: str
           ) -> Callable[[Evidence], Finding]:
    def test(ev: Evidence) -> Finding:
        found = [s for s in ev.find(architecture) if is_trained(s) or kind_of(s) == "imported"]
        if not found:
            return Finding("", "", NOT_TESTABLE, f"add a trained {architecture} experiment")
        s = max(found, key=lambda x: budget_of(x)["images_seen"] or 0)
        measured = f"{s['psnr']:.2f} dB on {s.get('dataset', '?')}"
        if not _on_celebahq(s):
            return Finding(measured, _steps(s), NOT_TESTABLE, f"needs {CELEBAHQ_NEEDS}",
                           (s["experiment"],))
        seen = budget_of(s)["images_seen"] or 0
        if images_seen and is_trained(s) and seen < images_seen:
            return Finding(measured, _steps(s), NOT_TESTABLE,
                           f"needs {who}'s budget ({images_seen:,} images seen; this run "
                           f"{seen:,})", (s["experiment"],))
        low, high = s.get("psnr_ci_low"), s.get("psnr_ci_high")
        if low is not None and high is not None:
            ok = high + 0.005 >= quoted  # at or above the claim: not below it
            why = (f"95 % interval over {_seeds(s)} {low:.2f} to {high:.2f}, "
                   + ("reaching the claim" if ok else "below the claim"))
        else:
            ok = s["psnr"] >= quoted - SCORE_MARGIN_DB
            why = f"one seed: within {SCORE_MARGIN_DB} dB or above"
        return Finding(measured, _steps(s), REPRODUCED if ok else NOT_REPRODUCED, why,
                       (s["experiment"],))
    return test


def _runtime(ev: Evidence) -> Finding:
    found = [s for s in ev.find("ndmha") if s.get("inference_s_per_image") is not None]
    if not found:
        return Finding("", "", NOT_TESTABLE, "needs a measured inference time (a run's files, "
                       "not recorded means)" if ev.find("ndmha") else "add an ndmha experiment")
    s = found[0]
    measured = f"{s['inference_s_per_image']:.3f} s at {s['image_size']} px on {s['device']}"
    if not str(s.get("device", "")).startswith("cuda") or s.get("image_size") != 256:
        return Finding(measured, "inference, batch of the evaluation", NOT_TESTABLE,
                       "needs a GPU at 256 px (the paper names neither its GPU nor its batch)",
                       (s["experiment"],))
    ok = s["inference_s_per_image"] <= 0.08 + 0.005
    return Finding(measured, "inference", REPRODUCED if ok else NOT_REPRODUCED,
                   "at or under the quoted time" if ok else "slower than quoted",
                   (s["experiment"],))


def _ahead(on: Callable[[dict], bool], needs: str, others_needed: int | None
           ) -> Callable[[Evidence], Finding]:
    """NDMHA's PSNR is above every other method's on the same masks (95 % intervals), on the
    protocol ``on`` accepts: ``others_needed`` methods (None: at least one, every one given)."""
    def test(ev: Evidence) -> Finding:
        ours = [s for s in ev.find("ndmha") if is_trained(s)]
        others = [s for s in ev.summaries if kind_of(s) == "external"]
        # the protocol this run's numbers stand for, named in the verdict either way
        where = (f"this run: data.protocol {ours[0].get('protocol', 'none')} "
                 f"({ours[0].get('dataset', '?')})" if ours else "no trained NDMHA in this run")
        if not ours or not others or not on(ours[0]):
            return Finding("", "", NOT_TESTABLE, f"needs {needs}; {where}")
        results = [(o["experiment"], ev.difference(ours[0]["experiment"], o["experiment"]))
                   for o in others]
        ahead = [name for name, d in results if d and not pd.isna(d["low"]) and d["low"] > 0]
        enough = others_needed is None or len(results) == others_needed
        verdict = REPRODUCED if enough and len(ahead) == len(results) else NOT_REPRODUCED
        wanted = f"{others_needed} needed" if others_needed else "all needed"
        return Finding(f"ahead of {len(ahead)} of {len(results)} (95 % intervals) on "
                       f"{ours[0]['protocol']}", _steps(ours[0]), verdict,
                       f"ahead of all {len(results)}" if verdict == REPRODUCED else
                       f"ahead of {', '.join(ahead) or 'none'}; {wanted}",
                       (ours[0]["experiment"], *(o["experiment"] for o in others)))
    return test


def _ablation(option: str, what: str) -> Callable[[Evidence], Finding]:
    def test(ev: Evidence) -> Finding:
        full, cut = ev.find("ndmha"), ev.find("ndmha", {option: ABLATIONS[option]})
        full, cut = [s for s in full if is_trained(s)], [s for s in cut if is_trained(s)]
        missing = f"add the ablation ndmha with {option}: false (configs/ablation.yaml)"
        if not full or not cut:
            return Finding("", "", NOT_TESTABLE, missing)
        a, b = full[0], cut[0]
        measured, verdict, why = _sign_verdict(ev.difference(a["experiment"], b["experiment"]),
                                               True, f"{what}, {_seeds(a)}", missing)
        return Finding(measured, _steps(a), verdict, why, (a["experiment"], b["experiment"]))
    return test


def _equal_budget_pairs(ev: Evidence) -> list[tuple[int, dict, dict]]:
    """(steps, NDMHA, U-Net) for every budget both were trained at, shortest first."""
    nets = [s for s in ev.find("ndmha") if is_trained(s)]
    unets = [s for s in ev.find("baseline") if is_trained(s)]
    pairs = []
    for n in nets:
        twin = next((u for u in unets if budget_of(u)["steps"] == budget_of(n)["steps"]
                     and budget_of(u)["batch"] == budget_of(n)["batch"]), None)
        if twin is not None:
            pairs.append((budget_of(n)["steps"], n, twin))
    return sorted(pairs, key=lambda p: p[0])


def _under_unet(ev: Evidence) -> Finding:
    pairs = _equal_budget_pairs(ev)
    missing = "needs NDMHA and the U-Net trained at one equal budget"
    if not pairs:
        return Finding("", "", NOT_TESTABLE, missing)
    _, n, u = pairs[0]
    measured, verdict, why = _sign_verdict(ev.difference(n["experiment"], u["experiment"]),
                                           False, f"NDMHA − U-Net, {_seeds(n)}", missing)
    return Finding(measured, _steps(n), verdict, why, (n["experiment"], u["experiment"]))


def _overtakes(ev: Evidence) -> Finding:
    pairs = _equal_budget_pairs(ev)
    missing = ("needs NDMHA and the U-Net at a second, longer equal budget (configs/study.yaml: "
               "ndmha_8000 beside baseline)")
    if len({p[0] for p in pairs}) < 2:
        return Finding("", "", NOT_TESTABLE, missing)
    _, n, u = pairs[-1]
    measured, verdict, why = _sign_verdict(ev.difference(n["experiment"], u["experiment"]),
                                           True, f"NDMHA − U-Net at the longest budget, "
                                           f"{_seeds(n)}", missing)
    return Finding(measured, _steps(n), verdict, why, (n["experiment"], u["experiment"]))


CLAIMS = (
    Claim("paper_parameters", "paper", "NDMHA has 4.1 M parameters", "4.1 M",
          _parameters(4.1, 0.1, ("ndmha", "ndmha_released"))),
    Claim("paper_gmac", "paper", "NDMHA costs 15.01 GMAC at 256 px", "15.01", _gmac),
    Claim("paper_psnr", "paper", "NDMHA scores 28.19 dB on CelebA-HQ", "28.19 dB",
          _score("ndmha", 28.19, PAPER_IMAGES_SEEN, "the paper")),
    Claim("paper_runtime", "paper", "NDMHA inpaints an image in 0.08 s", "0.08 s", _runtime),
    Claim("paper_ahead", "paper", "NDMHA is ahead of nine methods", "28.19 vs ≤27.75",
          _ahead(_on_celebahq, f"{CELEBAHQ_NEEDS} and the nine methods' outputs on the same "
                 "masks (experiments of kind external)", 9)),
    Claim("paper_deformable", "paper", "deformable sampling improves NDMHA", "ablation",
          _ablation("deformable", "NDMHA − plain depthwise convs")),
    Claim("paper_nesting", "paper", "the nested attention improves NDMHA", "ablation",
          _ablation("nested", "NDMHA − one attention")),
    Claim("paper_places2", "paper", "NDMHA is ahead of the compared methods on Places2",
          "Places2 table", _ahead(_on_places2, f"{PLACES2_NEEDS} and the compared methods' "
                                  "outputs on the same masks (experiments of kind external)",
                                  None)),
    Claim("seed_unet_parameters", "seed report", "its U-Net has 3,835,907 parameters",
          "3,835,907", _parameters(3835907, 0, ("baseline",), exact=True)),
    Claim("seed_unet_psnr", "seed report", "its U-Net scores 31.71 dB on CelebA-HQ", "31.71 dB",
          _score("baseline", 31.71, None, "the seed report")),
    Claim("seed_ndmha_under_unet", "seed report", "its NDMHA trails its U-Net", "26.43 < 31.71",
          _under_unet),
    Claim("seed_overtakes", "seed report", "NDMHA overtakes with more training", "expected",
          _overtakes),
)


def scorecard(summaries: list[dict], comparisons: pd.DataFrame) -> pd.DataFrame:
    """Every claim's row (:data:`COLUMNS`) from a run's experiments and comparisons."""
    evidence = Evidence(summaries, comparisons)
    rows = []
    for claim in CLAIMS:
        found = claim.test(evidence)
        rows.append({"claim_id": claim.claim_id, "source": claim.source, "claim": claim.claim,
                     "quoted": claim.quoted, "measured": found.measured,
                     "budget": found.budget, "verdict": found.verdict, "why": found.why,
                     "experiments": " ".join(found.experiments)})
    return pd.DataFrame(rows, columns=COLUMNS)


def recorded_scorecard(path: str | Path, experiments: dict[str, dict], pairs: list[list[str]],
                       dataset: str, protocol: str = "none") -> pd.DataFrame:
    """The scorecard of runs recorded in a CSV (:func:`read_recorded`: per-seed test means, maybe
    from several machines), as the workflow's tables would compute it had every run been on one
    disk. ``experiments`` maps each configured experiment to its ``architecture``, ``options``,
    ``kind`` and ``batch`` (None where it is not trained); recorded runs of other experiments are left out, and so are the
    ``pairs`` (the config's comparisons) that name them. What needs a run's files (inference
    time) reads not testable."""
    from ndmha.models import build_model, count_parameters

    recorded = read_recorded(path)
    runs = recorded[recorded.experiment.isin(list(experiments))]
    per_run, members = [], {}
    for name, group in runs.groupby("experiment", sort=False):
        e = experiments[name]
        steps = sorted({int(v) for v in group["steps"].dropna()}) if "steps" in group else []
        if len(steps) > 1:
            raise DataError(f"{path}: the seeds of {name} were trained for different steps "
                            f"({steps}): not one experiment")
        steps_done = steps[0] if steps and e["kind"] == "trained" else 0
        built = e["kind"] in ("trained", "imported")
        parameters = (count_parameters(build_model(e["architecture"], e["options"], "torch"))
                      if built else 0)
        budget = {"steps": steps_done, "batch_size": e["batch"], "processes": 1,
                  "images_seen": steps_done * (e["batch"] or 0), "train_seconds": None,
                  "train_device": ", ".join(sorted(set(group.get("machine", []))))}
        for row in group.to_dict("records"):
            seed = None if pd.isna(row["seed"]) else int(row["seed"])
            run = name if seed is None else f"{name}.seed{seed}"
            members[run] = {"group": name, "seed": seed}
            per_run.append({  # a metric not recorded reads as one whose weights were missing
                **{m: row[m] if m in row and not pd.isna(row[m]) else "n/a (not recorded)"
                   for m in (*INTERVAL_METRICS, *SPREAD_METRICS)},
                "experiment": run, "architecture": e["architecture"], "options": e["options"],
                "kind": e["kind"], "dataset": dataset, "protocol": protocol,
                "parameters": parameters,
                "budget": budget})
    present = set(runs.experiment) | {"floor"}
    comparisons, _ = compare_recorded_runs(recorded, [p for p in pairs if set(p) <= present],
                                           Path(path))
    return scorecard(aggregate(per_run, members), comparisons)


def scorecard_view(table: pd.DataFrame) -> pd.DataFrame:
    """scorecard.md: the claim, as quoted, as measured, and the verdict; the reasons below."""
    return view(table.assign(n=_numbers(table)), {
        "": "n", "claim": "claim", "quoted": "quoted", "measured here": "measured",
        "verdict": "verdict"})


def _numbers(table: pd.DataFrame) -> list[str]:
    """P1, P2, … for the paper's claims, S1, … for the seed report's."""
    counts: dict[str, int] = {}
    numbers = []
    for source in table["source"]:
        counts[source] = counts.get(source, 0) + 1
        numbers.append(f"{'P' if source == 'paper' else 'S'}{counts[source]}")
    return numbers


def rules() -> str:
    """How every verdict is decided, in words, with the numbers the tests use."""
    level = f"{LEVEL:.0%}".replace("%", " %")
    return (
        "How a verdict is decided. A count (parameters) is reproduced when it lies within the "
        "precision the claim is quoted to, half a unit of its last digit; GMAC when the claim "
        "lies between our two counts, with and without the deformable convolutions. A "
        "difference (an ablation, one network against another) needs two seeds or more: it is "
        f"reproduced when its {level} Student-t interval over the seed pairs lies on the "
        "claimed side of 0, not reproduced when the interval lies on the other side or across "
        "0 (not resolved). A score on CelebA-HQ needs data.protocol celebahq-qdimd (CelebA-HQ "
        "with QD-IMD's masks; auto gives it for data.layout celebahq) and the claimed budget "
        f"({PAPER_IMAGES_SEEN:,} images seen for the paper's 200 epochs of 27,000 images); it "
        f"is reproduced when its {level} interval over seeds reaches the claim or lies above "
        f"it, and with one seed when it is within {SCORE_MARGIN_DB} dB of the claim or above. "
        "A ranking (ahead of other methods) needs their outputs on the same masks of that "
        "protocol (places2-nvidia for the Places2 table), and NDMHA's paired interval above "
        "each of them. The inference time needs a GPU at 256 px.")


def scorecard_notes(table: pd.DataFrame) -> str:
    """One line a claim: its budget and why the verdict is what it is."""
    lines = [f"- {n}: {r['why']}" + (f"; budget: {r['budget']}" if r["budget"] else "") + "."
             for n, r in zip(_numbers(table), table.to_dict("records"))]
    return ("\nP: the paper's claims; S: the seed report's. "
            + every_column("scorecard.csv (with the source and the experiments each row read)")
            + "\n\n"
            + "\n".join(lines) + "\n\n" + rules() + "\n")


def _rst_cell(value: object) -> str:
    # Jinja renders the report's front page: no template syntax may come from a cell
    return str(value).replace("{", "(").replace("}", ")").replace("\n", " ") or "–"


def scorecard_rst(table: pd.DataFrame, description: str, smoke_test: bool = False) -> str:
    """The report's front page: the scorecard first, one list item a claim (its number and
    verdict, the claim as quoted, as measured here, and why), then the workflow's description.
    A list, not a table: the report sets its description beside the workflow graph, and a table of
    seven columns grew wider than that column and ran under the graph; a list wraps at any width.
    """
    lines = ["Reproduction scorecard", "======================", "",
             "One item a claim of the paper or the seed report: what this run measured, at which "
             "budget, and the verdict that follows from its tables (scorecard.csv in the "
             "*scorecard* section); how each verdict is decided is said below it.", ""]
    if smoke_test:
        lines += ["**This run is a smoke test** (the embedded demo at smoke-test budgets): its "
                  "verdicts on learned quality say nothing of the networks; the study's "
                  "findings and figures are in docs/study.md.", ""]
    for n, r in zip(_numbers(table), table.to_dict("records")):
        cell = {k: _rst_cell(r[k]) for k in ("source", "claim", "quoted", "measured", "verdict",
                                             "why")}
        measured = ("Not measured here." if cell["measured"] == "–"
                    else f"Measured here: {cell['measured']}.")
        why = cell["why"][:1].upper() + cell["why"][1:]
        lines += [f"- **{n} {cell['verdict']}.** {cell['claim']} ({cell['source']}: "
                  f"{cell['quoted']}). {measured} {why}", ""]
    return "\n".join(lines + [rules(), ""]) + "\n" + description
