"""The dashboard's files as a real `ensemble serve` serves them at /ui/ (docs/dashboard.md): types,
security headers, caching, and that no request path reaches anything but the built files."""

from __future__ import annotations

import http.client
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from support.ensemble import Ensemble

ADMIN = "adm_static-test-admin-key-000000000"
UI_BUILD = Path(__file__).resolve().parents[2] / "python" / "ensemble" / "ui"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ensemble]:
    server = Ensemble(Path(tmp_path_factory.mktemp("ui")), env={"ENSEMBLE_ADMIN_KEY": ADMIN})
    yield server
    server.stop()


def raw_get(server: Ensemble, path: str) -> tuple[int, bytes]:
    """GET with the path sent exactly as given (httpx would resolve `..` segments first)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.putrequest("GET", path, skip_accept_encoding=True)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def assets_of(index: str) -> list[str]:
    return re.findall(r'(?:src|href)="(/ui/[^"]+)"', index)


def test_the_page_loads_without_any_key_with_strict_security_headers(server: Ensemble) -> None:
    r = httpx.get(server.url + "/ui/", timeout=10)
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert r.text == (UI_BUILD / "index.html").read_text()
    csp = {d.split(" ")[0]: d for d in (p.strip() for p in r.headers["content-security-policy"].split(";"))}
    assert csp["default-src"] == "default-src 'self'"
    assert csp["script-src"] == "script-src 'self'"  # no 'unsafe-inline', no 'unsafe-eval'
    assert csp["style-src"] == "style-src 'self'"
    assert csp["connect-src"] == "connect-src 'self'"
    assert csp["frame-ancestors"] == "frame-ancestors 'none'"
    assert csp["object-src"] == "object-src 'none'" and csp["base-uri"] == "base-uri 'none'"
    assert "unsafe" not in r.headers["content-security-policy"]
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert r.headers["x-frame-options"] == "DENY"
    # The built page itself has no inline script or style for the policy to forbid.
    assert re.search(r"<script(?![^>]*\bsrc=)[^>]*>", r.text) is None
    assert "<style" not in r.text and "style=" not in r.text


def test_assets_have_their_types_and_are_cached_for_good_the_page_is_revalidated(server: Ensemble) -> None:
    page = httpx.get(server.url + "/ui/", timeout=10)
    assert page.headers["cache-control"] == "no-cache"
    types = {
        ".js": "text/javascript; charset=utf-8",
        ".css": "text/css; charset=utf-8",
        ".svg": "image/svg+xml",
    }
    found = assets_of(page.text)
    assert {Path(a).suffix for a in found} == set(types)
    for path in found:
        r = httpx.get(server.url + path, timeout=10)
        assert r.status_code == 200, path
        assert r.headers["content-type"] == types[Path(path).suffix], path
        assert r.content == (UI_BUILD / path.removeprefix("/ui/")).read_bytes()
        assert r.headers["x-content-type-options"] == "nosniff"
        if path.startswith("/ui/assets/"):  # content-hashed names
            assert r.headers["cache-control"] == "public, max-age=31536000, immutable", path
        else:
            assert r.headers["cache-control"] == "no-cache", path


def test_etag_revalidation_answers_304(server: Ensemble) -> None:
    first = httpx.get(server.url + "/ui/", timeout=10)
    etag = first.headers["etag"]
    assert re.fullmatch(r'"[0-9a-f]{32}"', etag)
    again = httpx.get(server.url + "/ui/", headers={"if-none-match": etag}, timeout=10)
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == etag and "content-security-policy" in again.headers
    weak = httpx.get(
        server.url + "/ui/index.html", headers={"if-none-match": f'"other", W/{etag}'}, timeout=10
    )
    assert weak.status_code == 304
    stale = httpx.get(server.url + "/ui/", headers={"if-none-match": '"0000"'}, timeout=10)
    assert stale.status_code == 200 and stale.text == first.text


def test_head_and_the_bare_prefix(server: Ensemble) -> None:
    head = httpx.head(server.url + "/ui/", timeout=10)
    assert head.status_code == 200 and head.content == b""
    bare = httpx.get(server.url + "/ui", timeout=10)
    assert bare.status_code == 308 and bare.headers["location"] == "/ui/"
    post = httpx.post(server.url + "/ui/", timeout=10)
    assert post.status_code == 405 and post.headers["allow"] == "GET"


@pytest.mark.parametrize(
    "path",
    [
        "/ui/../pyproject.toml",
        "/ui/../../../../etc/passwd",
        "/ui/%2e%2e/%2e%2e/pyproject.toml",
        "/ui/%2E%2E%2Fserver%2Fui.py",
        "/ui/..%2f..%2fserver%2fadmin.py",
        "/ui/assets/../../server/ui.py",
        "/ui/assets/..%5c..%5cserver%5cui.py",
        "/ui/assets/",
        "/ui/assets",
        "/ui//etc/passwd",
        "/ui/./index.html",
        "/ui/index.html/",
        "/ui/index.html%00.js",
        "/ui/__init__.py",
        "/ui/.gitignore",
        "/ui/%2fetc%2fpasswd",
        "/ui/~root",
    ],
)
def test_no_path_reaches_anything_but_the_built_files(server: Ensemble, path: str) -> None:
    status, body = raw_get(server, path)
    assert status in (400, 404), (path, status)
    for secret in (b"[project]", b"root:", b"import ", b"<!doctype html>"):
        assert secret not in body, (path, body[:200])


def test_state_says_whether_there_is_an_admin_api(server: Ensemble, tmp_path: Path) -> None:
    r = httpx.get(server.url + "/ui/state", timeout=10)
    assert r.status_code == 200 and r.json()["admin_api"] == "enabled"
    assert r.headers["cache-control"] == "no-store"
    assert ADMIN not in r.text
    without = Ensemble(tmp_path, key=False)
    try:
        r = httpx.get(without.url + "/ui/state", timeout=10)
        assert r.json()["admin_api"] == "disabled"
        assert httpx.get(without.url + "/ui/", timeout=10).status_code == 200  # the page still loads
        assert httpx.get(without.url + "/admin/status", timeout=10).status_code == 503
    finally:
        without.stop()
