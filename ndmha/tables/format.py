"""Writing the tables: every column to CSV, a reader's few to Markdown.

A Markdown table is for a screen or a pull request's view: at most :data:`MAX_WIDTH` characters a
line. Each table's Markdown view picks its columns (:func:`view`) and says below it which CSV holds
every column; a cell that would still push a line past the width is cut short with an ellipsis,
and the note says so.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pandas as pd

from ndmha.io import atomic_open

#: the widest line of a Markdown table (a GitHub pull request's diff view shows ~130 characters)
MAX_WIDTH = 130
ELLIPSIS = "…"
#: how a numeric cell is printed, by column (the CSVs keep %.6g)
FORMATS = {"psnr_db": "{:.2f}", "psnr": "{:.2f}", "ssim": "{:.4f}", "l1": "{:.4f}",
           "lpips": "{:.4f}", "fid": "{:.2f}", "fid_clean": "{:.2f}", "kid": "{:.4f}", "params_m": "{:.3f}",
           "runtime_s": "{:.4f}", "gmac": "{:.2f}", "gmac_without_deformable": "{:.2f}",
           "gmac_at_size": "{:.3f}", "train_time_s": "{:.0f}", "epochs": "{:.0f}",
           "steps": "{:.0f}", "images_seen": "{:.0f}", "batch": "{:.0f}",
           "seed_report": "{:.4g}", "ours": "{:.4g}", "floor_psnr": "{:.2f}",
           "floor_ssim": "{:.4f}", "floor_l1": "{:.4f}", "psnr_margin_db": "{:+.2f}",
           "test_images": "{:.0f}", "seeds": "{:.0f}", "margin_ci_low": "{:+.2f}",
           "margin_ci_high": "{:+.2f}", "difference": "{:.4g}", "seed_sd": "{:.4g}",
           "ci_low": "{:.4g}", "ci_high": "{:.4g}", "p_seeds": "{:.3g}", "p_holm": "{:.3g}",
           "model_wilcoxon_p": "{:.3g}", "model_difference": "{:.4g}",
           "model_ci_low": "{:.4g}", "model_ci_high": "{:.4g}", "seed_pairs": "{:.0f}",
           "seeds_to_resolve": "{:.0f}", "images": "{:.0f}"}


def missing(value: object) -> bool:
    return value is None or (not isinstance(value, str) and pd.isna(value))


def short(value: object) -> object:
    """A metric value, ``off`` for a metric switched off, or ``n/a`` for one whose weights were
    missing (the path goes to the caveats)."""
    return text_of(value) if isinstance(value, str) else value


def text_of(value: str) -> str:
    """What a metric that was not computed reads in a table: ``off`` or ``n/a``."""
    return "off" if value == "off" else "n/a"


def compact(values: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items()) if values else "(defaults)"


def cell(column: str, value: object) -> str:
    """One Markdown cell: blank for a missing value, a string as it is, a number in its column's
    format."""
    if missing(value):
        return ""
    if isinstance(value, str):
        return value
    return FORMATS.get(column, "{:.4g}" if isinstance(value, float) else "{}").format(value)


def with_interval(value: object, low: object, high: object, digits: int) -> str:
    """``mean ± half`` of a symmetric 95 % interval (every interval here is Student-t's), the
    mean alone without one, ``n/a`` for a metric without weights, ``off`` for one switched off."""
    if isinstance(value, str):
        return text_of(value)
    if missing(value):
        return ""
    if missing(low) or missing(high):
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} ± {(high - low) / 2:.{digits}f}"


def interval(low: object, high: object, digits: int = 2) -> str:
    """A 95 % interval as ``low to high`` (signed: an interval of a difference)."""
    if missing(low) or missing(high):
        return ""
    return f"{low:+.{digits}f} to {high:+.{digits}f}"


def view(table: pd.DataFrame, columns: dict[str, object]) -> pd.DataFrame:
    """A table's Markdown view: ``columns`` maps a heading to a source column's name or to a
    function of a row (a dict) that returns the cell."""
    rows = table.to_dict("records")
    return pd.DataFrame({heading: [cell(source, row.get(source)) if isinstance(source, str)
                                   else source(row) for row in rows]
                         for heading, source in columns.items()}, columns=list(columns))


def _render(cells: pd.DataFrame) -> str:
    """A GitHub table, each column as wide as its widest cell or heading. Written here rather than
    with tabulate (pandas' to_markdown): tabulate pads every heading by two more characters,
    ~20 of the 130 on a nine-column table."""
    widths = [max([len(str(c)), 3, *map(len, cells[c])]) for c in cells.columns]

    def line(values: list[str]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths)) + " |"
    return "\n".join([line([str(c) for c in cells.columns]),
                      "|" + "|".join("-" * (w + 2) for w in widths) + "|",
                      *(line(list(row)) for row in cells.itertuples(index=False))])


def wrap(text: str, width: int = 100) -> str:
    """Prose under a table, wrapped to ``width`` (Markdown joins the lines again); a list item
    keeps its hanging indent, a table line is left as it is."""
    out = []
    for line in text.split("\n"):
        if len(line) <= width or line.startswith("|"):
            out.append(line)
        else:
            indent = "  " if line.startswith("- ") or line[:3].rstrip(".").isdigit() else ""
            out.append(textwrap.fill(line, width, subsequent_indent=indent,
                                     break_long_words=False, break_on_hyphens=False))
    return "\n".join(out)


def _fit(cells: pd.DataFrame, width: int) -> tuple[pd.DataFrame, bool]:
    """Cut the longest cells of the widest column short until every line fits ``width``."""
    cut = False
    while cells.size and max(map(len, _render(cells).splitlines())) > width:
        lengths = {c: max(len(c), *(len(v) for v in cells[c])) for c in cells.columns}
        column = max(lengths, key=lengths.get)
        target = lengths[column] - 1
        if target <= max(len(column), 3):
            break  # nothing left to cut in a meaningful way
        cells[column] = [v if len(v) <= target else v[:target - 1] + ELLIPSIS
                         for v in cells[column]]
        cut = True
    return cells, cut


def to_markdown(table: pd.DataFrame, note: str = "", notes: list[str] = (),
                width: int = MAX_WIDTH) -> str:
    """A GitHub-style Markdown table of at most ``width`` characters a line: blanks for missing
    values, the note, and the caveats of our rows (e.g. a perceptual loss trained with random
    VGG19 weights)."""
    cells = pd.DataFrame({c: [cell(c, v) for v in table[c]] for c in table.columns},
                         columns=table.columns)
    cells, cut = _fit(cells, width)
    body = _render(cells)
    if cut:
        body += (f"\n\nCells marked {ELLIPSIS} are cut short to keep the table within {width} "
                 "characters; the CSV holds them whole.")
    return body + "\n" + wrap(note + "".join(f"\nCaveat: {c}.\n" for c in notes))


def write_csv(frame: pd.DataFrame, path: str | Path) -> None:
    with atomic_open(path, newline="") as fh:
        frame.to_csv(fh, index=False, float_format="%.6g")


def write_md(frame: pd.DataFrame, path: str | Path | None, note: str,
             notes: list[str] = ()) -> None:
    if path is not None:
        with atomic_open(path) as fh:
            fh.write(to_markdown(frame, note, notes))


def every_column(csv_name: str) -> str:
    """The sentence under a Markdown view that names the CSV with every column."""
    return f"Every column, in full precision, is in {csv_name}."
