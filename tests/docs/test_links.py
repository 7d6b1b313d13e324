"""Every relative link in README.md and docs/*.md points at a file that exists, and at a heading of it
when it names an anchor."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote

import pytest

from support.markdown import DOCS, README, anchors, links
from support.processes import ROOT

PAGES = [README, *DOCS]


def relative_links(page: Path) -> list[str]:
    return [t for t in links(page) if not t.startswith(("http://", "https://", "mailto:"))]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        file = (page.parent / unquote(path)).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading #{anchor} in {file.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_the_pages_link_somewhere() -> None:
    """The check above is not vacuous: the README links into docs/, docs link to each other."""
    assert any("docs/" in t for t in relative_links(README))
    assert any("#" in t for page in PAGES for t in relative_links(page))


def test_readme_stays_small() -> None:
    assert README.stat().st_size < 15_000, "README.md is for users: move depth to docs/*.md"
