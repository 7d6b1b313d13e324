"""Granian's private extension module is imported in one place only (server/granian_rsgi.py says why)."""

from __future__ import annotations

from pathlib import Path

import ensemble

PACKAGE = Path(ensemble.__file__).parent


def test_only_the_shim_imports_granians_private_module() -> None:
    importers = sorted(
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if "granian._granian" in path.read_text(encoding="utf-8")
    )
    assert importers == ["server/granian_rsgi.py"]
