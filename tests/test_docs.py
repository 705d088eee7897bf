"""The docs are for readers: every relative link in README and docs resolves (the file, and the
heading an anchor names), the README shows the two commands and the findings first, and no
page reads like a diary."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)|^\[[^\]]+\]: (\S+)", re.MULTILINE)  # inline, reference
#: words of a lab notebook, not of a decision record or a results section
DIARY = re.compile(r"\b(this|previous|last|earlier|next|second|third) sessions?\b|\bsessions?\b"
                   r"|\btoday\b|\byesterday\b|\bwe then\b", re.IGNORECASE)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
    return {slug(m[1]) for m in re.finditer(r"^#+ (.+)$", text, re.MULTILINE)}


def links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
    return [a or b for a, b in LINK.findall(text)]


def test_slug_follows_github() -> None:
    assert slug("Seeds, intervals and paired comparisons (`ndmha/uncertainty.py`)") == \
        "seeds-intervals-and-paired-comparisons-ndmhauncertaintypy"
    assert slug("Why NDMHA learned slower than the U-Net, and what we changed") == \
        "why-ndmha-learned-slower-than-the-u-net-and-what-we-changed"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_resolves(page: Path) -> None:
    relative = [t for t in links(page) if not re.match(r"[a-z]+:", t)]
    broken = []
    for target in relative:
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no file {file}")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading #{anchor} in {file.name}")
    assert not broken, broken


def test_readme_opens_with_the_commands_and_the_findings() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 150
    first_screen = "\n".join(lines[:60])
    assert "make demo" in first_screen and "make test" in first_screen
    assert "## Findings at a glance" in first_screen
    findings = "\n".join(lines[lines.index("## Findings at a glance"):])
    assert re.search(r"−1\.04 dB \(−1\.43 to −0\.66\)", findings)  # an answer with its interval
    assert len(links(ROOT / "README.md")) >= 5  # the link test reads the README's links


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_no_diary_language(page: Path) -> None:
    hits = [f"{i}: {line.strip()}" for i, line in enumerate(page.read_text().splitlines(), 1)
            if DIARY.search(line)]
    assert not hits, hits


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_tables_fit_130_characters(page: Path) -> None:
    wide = [f"{i}: {len(line)}" for i, line in enumerate(page.read_text().splitlines(), 1)
            if line.startswith("|") and len(line) > 130]
    assert not wide, wide


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_no_dated_headings(page: Path) -> None:
    """A page of current figures dates each table in its text; a date in a heading makes a
    section of a log (the date a figure was measured is fine beside the figure)."""
    dated = [line for line in page.read_text().splitlines()
             if re.match(r"#+ .*\b20\d\d-\d\d(-\d\d)?\b", line)]
    assert not dated, dated
