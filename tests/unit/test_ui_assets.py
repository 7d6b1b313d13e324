"""Which built files the dashboard serves, and how (python/ensemble/server/ui.py)."""

from __future__ import annotations

import re
from pathlib import Path

from ensemble.server import ui


def test_every_built_file_is_a_route_with_its_type_and_cache_policy(tmp_path: Path) -> None:
    (tmp_path / "assets").mkdir()
    (tmp_path / "index.html").write_text("<!doctype html>")
    (tmp_path / "favicon.svg").write_text("<svg/>")
    (tmp_path / "assets" / "index-AbC123.js").write_text("export {}")
    (tmp_path / "assets" / "index-AbC123.css").write_text("body{}")
    (tmp_path / "assets" / "font.bin").write_bytes(b"\0")
    (tmp_path / ".DS_Store").write_bytes(b"x")  # never served: hidden files, Python files
    (tmp_path / "__init__.py").write_text("")
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "x.pyc").write_bytes(b"x")

    assets = ui.load(tmp_path)
    assert set(assets) == {
        "/ui/",
        "/ui/index.html",
        "/ui/favicon.svg",
        "/ui/assets/index-AbC123.js",
        "/ui/assets/index-AbC123.css",
        "/ui/assets/font.bin",
    }
    assert assets["/ui/"] == assets["/ui/index.html"]
    assert assets["/ui/"].content_type == "text/html; charset=utf-8"
    assert assets["/ui/assets/index-AbC123.js"].content_type == "text/javascript; charset=utf-8"
    assert assets["/ui/assets/font.bin"].content_type == "application/octet-stream"  # with nosniff
    assert assets["/ui/assets/index-AbC123.css"].cache_control == ui.IMMUTABLE
    assert assets["/ui/favicon.svg"].cache_control == ui.REVALIDATE == assets["/ui/"].cache_control
    assert assets["/ui/favicon.svg"].body == b"<svg/>"
    assert len({a.etag for a in assets.values()}) == 5  # one per distinct body


def test_no_build_no_routes(tmp_path: Path) -> None:
    assert ui.load(tmp_path / "missing") == {}


def test_the_shipped_build_has_the_page_and_everything_it_loads() -> None:
    index = ui.ASSETS["/ui/"].body.decode()
    referenced = re.findall(r'(?:src|href)="(/ui/[^"]+)"', index)
    assert len(referenced) >= 3  # script, style sheet, icon
    for path in referenced:
        assert path in ui.ASSETS, path
    for path, asset in ui.ASSETS.items():
        assert asset.content_type != "application/octet-stream", path
