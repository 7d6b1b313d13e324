"""The commands README.md and docs/*.md show run as written: every shell line names a make target
that exists, or an executable that does, and every `ensemble` line only subcommands and options the
CLI has. (tests/integration/test_quick_start.py runs the Quick start itself.)"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import tomllib
from pathlib import Path

import pytest

from ensemble.cli import build_parser
from support.markdown import DOCS, README, code_blocks, commands, prose, runnable_commands
from support.processes import BIN, ROOT

PAGES = [README, *DOCS]
BUILTINS = {".", "source", "cd", "export", "time", "set", "unset", "true", "false", "test", "echo"}
ENSEMBLE = (".venv/bin/ensemble", "ensemble")
_TARGET = re.compile(r"^([A-Za-z0-9_.-]+(?:[ \t]+[A-Za-z0-9_.-]+)*)[ \t]*:(?!=)", re.M)


def make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return {t for group in _TARGET.findall(text) for t in group.split()}


def simple_commands(line: str) -> list[list[str]]:
    """The simple commands of a line, with `$(…)` substitutions as commands of their own."""
    inner = re.findall(r"\$\(([^()]*)\)", line)
    outer = re.sub(r"\$\([^()]*\)", "SUBSTITUTED", line)
    out: list[list[str]] = []
    for part in [outer, *inner]:
        lexer = shlex.shlex(part, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        words: list[str] = []
        for token in [*lexer, ";"]:
            if token not in ("&&", "||", ";", "|", "&"):
                words.append(token)
                continue
            while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):  # VAR=value prefixes
                words.pop(0)
            if words:
                out.append(words)
            words = []
    return out


def executable(word: str) -> Path | None:
    if "/" not in word:
        found = shutil.which(word)
        return Path(found) if found else None
    if word.startswith(".venv/bin/"):  # whichever virtualenv runs this suite (make VENV=…)
        return BIN / word.removeprefix(".venv/bin/")
    return ROOT / word


def check_ensemble(argv: list[str]) -> str | None:
    try:
        build_parser().parse_args(argv)
    except SystemExit:
        return f"`ensemble {shlex.join(argv)}` is not a valid command line"
    return None


def problems_in(line: str, targets: set[str]) -> list[str]:
    out = []
    for words in simple_commands(line):
        program, args = words[0], words[1:]
        if program in BUILTINS:
            if program in ("time",) and args:
                out += problems_in(shlex.join(args), targets)
            continue
        if program == "make":
            out += [
                f"no make target {a!r}"
                for a in args
                if not a.startswith("-") and "=" not in a and a not in targets
            ]
            continue
        path = executable(program)
        if path is None or not path.exists():
            out.append(f"{program}: not found (as written: from the repository root, after make dev)")
        elif program.endswith("ensemble") and (problem := check_ensemble(args)):
            out.append(problem)
    return out


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_shell_commands_resolve(page: Path) -> None:
    targets = make_targets()
    broken = [f"{line}: {p}" for line in runnable_commands(page) for p in problems_in(line, targets)]
    assert not broken, f"{page.relative_to(ROOT)}:\n" + "\n".join(broken)


def synopsis_lines(page: Path) -> list[str]:
    return [
        line
        for lang, text in code_blocks(page)
        if lang not in ("sh", "bash", "shell", "console")
        for line in commands(text)
        if line.split()[0] in ENSEMBLE
    ]


def subparser(argv: list[str]) -> argparse.ArgumentParser:
    parser = build_parser()
    for word in argv:
        actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not actions or word not in actions[0].choices:
            raise AssertionError(f"no subcommand {word!r} in `{shlex.join(argv)}`")
        parser = actions[0].choices[word]
    return parser


@pytest.mark.parametrize(
    "page", [p for p in PAGES if synopsis_lines(p)], ids=lambda p: str(p.relative_to(ROOT))
)
def test_cli_synopsis_matches_the_parser(page: Path) -> None:
    """`ensemble keys create [--config PATH] --name N …`: the subcommand exists and has each option."""
    for line in synopsis_lines(page):
        path = []  # the subcommands: the lower-case words before the first option or placeholder
        for word in line.split()[1:]:
            if not (word.isalpha() and word.islower()):
                break
            path.append(word)
        parser = subparser(path)
        known = {s for a in parser._actions for s in a.option_strings}
        for option in re.findall(r"(?<![\w-])--[a-z][a-z-]*", line):
            assert option in known, f"{page.name}: `{line}`: `ensemble {' '.join(path)}` has no {option}"


def test_every_make_target_the_docs_name_exists() -> None:
    targets = make_targets()
    named = {t for page in PAGES for t in re.findall(r"`make ([a-z][\w-]*)", prose(page))}
    assert named and named <= targets, f"not in the Makefile: {sorted(named - targets)}"


def test_the_quick_start_states_each_minimum_version() -> None:
    """The versions scripts/prerequisites.sh enforces are the versions the README promises."""
    quick = README.read_text().split("## Quick start")[1].split("\n## ")[0]
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    cargo = tomllib.loads((ROOT / "rust" / "Cargo.toml").read_text())
    node = json.loads((ROOT / "clients" / "typescript" / "package.json").read_text())["engines"]["node"]

    def go(mod: str) -> str:
        return re.findall(r"^go (\S+)", (ROOT / mod).read_text(), re.M)[0]

    for stated in (
        f"Python {pyproject['project']['requires-python'].removeprefix('>=')}+",
        f"Rust {cargo['package']['rust-version']}+",
        f"Node.js {node.removeprefix('>=')}+",
        f"Go {go('clients/go/go.mod')}+",
        f"Go {go('benches/soak/rig/go.mod')}+",
        "`redis-server` 7+",
    ):
        assert " ".join(stated.split()) in " ".join(quick.split()), f"the Quick start does not say {stated!r}"


def test_ci_runs_the_readmes_test_command() -> None:
    readme_test = [c for c in runnable_commands(README) if c == "make test"]
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert readme_test and "make test" in ci and "make lint" in ci
