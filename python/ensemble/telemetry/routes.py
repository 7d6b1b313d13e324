"""`GET /metrics`: Prometheus text exposition, behind the admin key (SPEC §8)."""

from __future__ import annotations

import os

from ensemble import telemetry
from ensemble._native import constant_time_eq
from ensemble.errors import AuthenticationFailed, NotFound, Overloaded
from ensemble.server.http import Request
from ensemble.server.routes import Route
from ensemble.server.runtime import Runtime

ADMIN_KEY_ENV = "ENSEMBLE_ADMIN_KEY"
# Importing prometheus_client here would fix its mode before `ensemble serve` chose it: keep it lazy.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def require_admin(req: Request) -> None:
    admin_key = os.environ.get(ADMIN_KEY_ENV, "")
    if not admin_key:
        raise Overloaded("the admin API is disabled: set ENSEMBLE_ADMIN_KEY", code="admin_disabled")
    auth = req.header("authorization") or ""
    presented = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
    if not presented or not constant_time_eq(presented.encode(), admin_key.encode()):
        raise AuthenticationFailed(
            "a valid admin key is required (Authorization: Bearer …)", code="invalid_admin_key"
        )


async def metrics(rt: Runtime, req: Request) -> None:
    require_admin(req)
    m = telemetry.metrics
    if m is None:
        raise NotFound("metrics are disabled (telemetry.prometheus: false)", code="metrics_disabled")
    req.send(200, m.render(), content_type=CONTENT_TYPE)


ROUTES = [Route("GET", "/metrics", metrics, family="admin")]
