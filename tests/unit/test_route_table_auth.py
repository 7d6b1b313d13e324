"""The route table says who may call each route (server/access.py); these pin what it may say."""

from __future__ import annotations

from typing import get_args

from ensemble.server import app
from ensemble.server.access import Auth

# The only routes anyone may call: health checks, and the dashboard's page and static files (the page
# asks for the admin key itself). A new route that declares auth="none" must be added here on purpose.
OPEN = {("GET", "/health"), ("GET", "/api/v1/health"), ("GET", "/ui"), ("GET", "/ui/"), ("GET", "/ui/state")}


def test_every_route_declares_a_known_mode() -> None:
    for route in app.ROUTES:
        assert route.auth in get_args(Auth), route


def test_only_health_and_the_dashboard_files_are_open() -> None:
    open_routes = {(r.method, r.path) for r in app.ROUTES if r.auth == "none"}
    unexpected = {(m, p) for m, p in open_routes - OPEN if not p.startswith("/ui/")}
    assert not unexpected, f"routes anyone may call, not on the list: {sorted(unexpected)}"
    assert {("GET", "/health"), ("GET", "/api/v1/health")} <= open_routes


def test_admin_paths_need_the_admin_key_and_nothing_else_does() -> None:
    for route in app.ROUTES:
        admin_path = route.path.startswith("/admin/") or route.path == "/metrics"
        assert (route.auth == "admin") == admin_path, route
