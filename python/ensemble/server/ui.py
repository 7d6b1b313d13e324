"""The admin web dashboard at `/ui/` (see docs/dashboard.md).

The page is built from the sources in `ui/` (Preact + Vite, `make ui`) into `ensemble/ui/`, which
ships inside the package, so serving it needs no Node. Loading it needs no key: the page asks for the
admin key, keeps it in the tab's memory and calls the admin API with it. Every file found there at
import becomes an exact route, so no request path can name anything else on disk.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable

import orjson

from ensemble.errors import NotFound
from ensemble.server.access import ADMIN_KEY_ENV
from ensemble.server.http import Request
from ensemble.server.routes import Route
from ensemble.server.runtime import Runtime

PREFIX = "/ui/"
HASHED_DIR = "assets"  # Vite's output whose names carry a hash of their content

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".woff2": "font/woff2",
    ".json": "application/json",
    ".txt": "text/plain; charset=utf-8",
}

# The page loads its script, style and icon from here and talks only to this origin. No inline
# script or style, no eval, no string-to-DOM sinks (Trusted Types), never framed, no plugins.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
        "require-trusted-types-for 'script'",
        "trusted-types 'none'",
    ]
)
SECURITY_HEADERS = (
    ("content-security-policy", CONTENT_SECURITY_POLICY),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
    ("permissions-policy", "camera=(), microphone=(), geolocation=(), payment=(), usb=()"),
)
IMMUTABLE = "public, max-age=31536000, immutable"  # a new build gives new names
REVALIDATE = "no-cache"  # index.html and icons: cached, but checked (ETag) on every use


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    etag: str
    cache_control: str


def _walk(directory: Traversable, relative: str = "") -> list[tuple[str, Traversable]]:
    found: list[tuple[str, Traversable]] = []
    for entry in directory.iterdir():
        if entry.name.startswith(".") or entry.name.endswith(".py") or entry.name == "__pycache__":
            continue
        path = f"{relative}{entry.name}"
        if entry.is_dir():
            found.extend(_walk(entry, path + "/"))
        else:
            found.append((path, entry))
    return found


def load(root: Traversable) -> dict[str, Asset]:
    """The built files under `root`, by the URL path each is served at (index.html also at /ui/)."""
    if not root.is_dir():
        return {}
    assets: dict[str, Asset] = {}
    for path, entry in _walk(root):
        body = entry.read_bytes()
        assets[PREFIX + path] = Asset(
            body=body,
            content_type=CONTENT_TYPES.get(os.path.splitext(path)[1], "application/octet-stream"),
            etag='"' + hashlib.sha256(body).hexdigest()[:32] + '"',
            cache_control=IMMUTABLE if path.startswith(HASHED_DIR + "/") else REVALIDATE,
        )
    if PREFIX + "index.html" in assets:
        assets[PREFIX] = assets[PREFIX + "index.html"]
    return assets


ASSETS = load(files("ensemble") / "ui")


def _fresh(req: Request, etag: str) -> bool:
    """Does the browser's cached copy (If-None-Match) match?"""
    header = req.header("if-none-match")
    if not header:
        return False
    return any(tag.strip().removeprefix("W/") in (etag, "*") for tag in header.split(","))


async def serve(rt: Runtime, req: Request) -> None:
    asset = ASSETS[req.path]
    headers = [("cache-control", asset.cache_control), ("etag", asset.etag), *SECURITY_HEADERS]
    if _fresh(req, asset.etag):
        req.send(304, b"", asset.content_type, headers)
    else:
        req.send(200, asset.body, asset.content_type, headers)


async def redirect(rt: Runtime, req: Request) -> None:
    req.send(308, b"", "text/plain; charset=utf-8", [("location", PREFIX), *SECURITY_HEADERS])


async def state(rt: Runtime, req: Request) -> None:
    """What the page shows before sign-in: whether there is an admin API to sign in to. The same
    thing `/admin/*` answers without a key (503 or 401), but without an error in the console."""
    enabled = bool(os.environ.get(ADMIN_KEY_ENV))
    body = {"admin_api": "enabled" if enabled else "disabled", "version": rt.version}
    req.send(200, orjson.dumps(body), headers=[("cache-control", "no-store"), *SECURITY_HEADERS])


async def not_built(rt: Runtime, req: Request) -> None:
    raise NotFound("the dashboard is not built into this package: run `make ui`", code="ui_not_built")


ROUTES = [
    Route("GET", "/ui", redirect, auth="none"),
    Route("GET", PREFIX + "state", state, auth="none"),
    *(Route("GET", path, serve, auth="none") for path in ASSETS),
    *([] if PREFIX in ASSETS else [Route("GET", PREFIX, not_built, auth="none")]),
]
