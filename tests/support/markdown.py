"""Reading the project's Markdown the way a reader does: its code blocks, the shell commands in them,
its links and the anchors its headings make."""

from __future__ import annotations

import re
from pathlib import Path

from support.processes import ROOT

README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
RUNNABLE = ("sh", "bash", "shell", "console")  # fences whose lines are commands to run as written

_FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```", re.S | re.M)
_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def code_blocks(path: Path) -> list[tuple[str, str]]:
    """(language, text) of every fenced block."""
    return [(m.group(1), m.group(2)) for m in _FENCE.finditer(path.read_text())]


def commands(block: str) -> list[str]:
    """The commands of a shell block: continuation lines joined, comments and blank lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", block)
    out = []
    for line in joined.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", line).strip()  # a comment starts a word
        if line:
            out.append(line)
    return out


def runnable_commands(path: Path) -> list[str]:
    return [c for lang, text in code_blocks(path) if lang in RUNNABLE for c in commands(text)]


def prose(path: Path) -> str:
    """The text outside code blocks."""
    return _FENCE.sub("", path.read_text())


def links(path: Path) -> list[str]:
    """Every link target in the prose (images too are checked by whoever asks: not here)."""
    return _LINK.findall(prose(path))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*]", "", heading)  # inline code and emphasis marks
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link's text
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for heading in _HEADING.findall(prose(path)):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out
