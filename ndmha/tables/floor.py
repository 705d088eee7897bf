"""The training-free floor (the best training-free method's test PSNR) and whether each model
clears it: the floor table, and the sentence every table's note opens with."""

from __future__ import annotations

import pandas as pd

from ndmha import uncertainty
from ndmha.tables.format import every_column, interval, view
from ndmha.tables.rows import (at, budget_note, budget_of, is_floor, is_trained, kinds_note,
                               label_of)

#: "clears the floor": the mean test PSNR above the best training-free method's by more than this,
#: from one seed each (until seeds give an interval: a change of seed moved the demo's ablation
#: rows by up to ~0.3 dB, docs/architecture.md)
FLOOR_MARGIN_DB = 0.5
FLOOR_COLUMNS = ["experiment", "label", "psnr", "ssim", "l1", "floor", "floor_psnr",
                 "floor_ssim", "floor_l1", "psnr_margin_db", "margin_ci_low", "margin_ci_high",
                 "seeds", "rule", "clears_floor", "verdict", "steps", "train_time_s",
                 "test_images"]


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
                        f"dB) {at(s)}: {s['psnr']:.2f} dB ({margin:+.2f}{interval})"),
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


def floor_view(table: pd.DataFrame) -> pd.DataFrame:
    """floor.md: each model's PSNR against the floor's, the margin and its interval."""
    return view(table, {
        "experiment": "experiment", "PSNR (dB)": "psnr", "floor": "floor",
        "floor PSNR": "floor_psnr", "margin (dB)": "psnr_margin_db",
        "95 % interval": lambda r: interval(r["margin_ci_low"], r["margin_ci_high"]),
        "seeds": "seeds", "clears": "clears_floor", "steps": "steps"})


FLOOR_NOTE = every_column("floor.csv (with SSIM, L1, the rule and the verdict of each row)")
