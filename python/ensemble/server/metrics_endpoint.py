"""`GET /metrics`: Prometheus text exposition, behind the admin key (see docs/admin-api.md)."""

from __future__ import annotations

from ensemble import telemetry
from ensemble.errors import NotFound
from ensemble.server.http import Request
from ensemble.server.routes import Route
from ensemble.server.runtime import Runtime

# Importing prometheus_client here would fix its mode before `ensemble serve` chose it: keep it lazy.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


async def metrics(rt: Runtime, req: Request) -> None:
    m = telemetry.metrics
    if m is None:
        raise NotFound("metrics are disabled (telemetry.prometheus: false)", code="metrics_disabled")
    req.send(200, m.render(), content_type=CONTENT_TYPE)


ROUTES = [Route("GET", "/metrics", metrics, family="admin", auth="admin")]
