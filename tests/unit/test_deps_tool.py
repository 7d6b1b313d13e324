"""`python -m ensemble.tools.deps`: the import graph between top-level packages, failing on a cycle."""

from __future__ import annotations

from pathlib import Path

import pytest

from ensemble.tools import deps

PACKAGE = Path(deps.__file__).resolve().parents[1]


def make_package(root: Path, files: dict[str, str]) -> Path:
    pkg = root / "app"
    for name, text in {"__init__.py": "", **files}.items():
        path = pkg / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return pkg


def test_ensemble_has_no_cycle_between_its_packages(capsys: pytest.CaptureFixture[str]) -> None:
    assert deps.main(["--root", str(PACKAGE)]) == 0, capsys.readouterr().err
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("server -> ") and "batch" in line for line in lines), lines


def test_a_cycle_fails_and_names_the_modules_making_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pkg = make_package(
        tmp_path,
        {
            "a/__init__.py": "",
            "a/low.py": "from app.b import thing\n",
            "b/__init__.py": "from .impl import thing\n",
            "b/impl.py": "def thing():\n    from ..a import low\n    return low\n",  # hidden in a function
            "c.py": "import app.a.low\n",
        },
    )
    assert deps.main(["--root", str(pkg)]) == 1
    out, err = capsys.readouterr()
    assert "a -> b" in out and "c -> a" in out
    assert "cycle between a, b:" in err
    assert "a -> b: app.a.low" in err and "b -> a: app.b.impl" in err
    assert "c" not in err.split("cycle between")[1].split(":")[0]


def test_type_checking_imports_are_not_edges(tmp_path: Path) -> None:
    pkg = make_package(
        tmp_path,
        {
            "a.py": "import app.b\n",
            "b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from app.a import X\n",
        },
    )
    graph = deps.import_graph(pkg)
    assert set(graph["a"]) == {"b"} and not graph["b"]
    assert deps.cycles(graph) == []


def test_a_longer_cycle_is_one_component(tmp_path: Path) -> None:
    pkg = make_package(
        tmp_path, {"a.py": "import app.b\n", "b.py": "import app.c\n", "c.py": "from app import a\n"}
    )
    assert deps.cycles(deps.import_graph(pkg)) == [["a", "b", "c"]]
