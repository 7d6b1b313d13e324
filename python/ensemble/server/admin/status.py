"""`GET /admin/status`: providers and endpoints (health, cooldowns, rate-limit windows, reachability),
Redis and S3, the request log, affinity; see docs/admin-api.md."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any
from urllib.parse import urlsplit

from ensemble.server.admin.common import send
from ensemble.server.http import Request
from ensemble.server.routes import Route
from ensemble.server.runtime import Runtime
from ensemble.storage.keys import now_iso

PROBE_TTL_S = 10.0  # reachability probes are cached this long per endpoint
PROBE_TIMEOUT_S = 1.0

_probes: dict[str, tuple[float, dict[str, Any]]] = {}


async def probe(base_url: str) -> dict[str, Any]:
    """Can we open a TCP connection to the provider? Cheap, no credentials sent; cached briefly."""
    now = time.monotonic()
    cached = _probes.get(base_url)
    if cached and now - cached[0] < PROBE_TTL_S:
        return cached[1]
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    t0 = time.perf_counter()
    result: dict[str, Any]
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), PROBE_TIMEOUT_S)
        writer.close()
        result = {"state": "reachable", "connect_ms": round((time.perf_counter() - t0) * 1000, 3)}
    except (OSError, TimeoutError) as e:
        result = {"state": "unreachable", "error": type(e).__name__}
    result["checked_at"] = now_iso()
    _probes[base_url] = (now, result)
    return result


def _rate_limit_rows(rt: Runtime) -> dict[str, list[dict[str, Any]]]:
    """Per-endpoint rate-limit counters, when the admission layer keeps them (by endpoint id)."""
    endpoint_status = getattr(rt.admission, "endpoint_status", None)
    rows: dict[str, list[dict[str, Any]]] = {}
    if callable(endpoint_status):
        for row in endpoint_status():
            rows.setdefault(str(row.get("endpoint_id")), []).append(row)
    return rows


async def status(rt: Runtime, req: Request) -> None:
    now = time.monotonic()
    limits = _rate_limit_rows(rt)
    router = rt.gateway.router if rt.gateway is not None else None
    providers: dict[str, Any] = {}
    probes: list[tuple[dict[str, Any], asyncio.Task[dict[str, Any]]]] = []
    for p in rt.providers:
        endpoints = []
        for e in p.endpoints:
            per_model = limits.get(e.id, [])
            entry: dict[str, Any] = {
                "id": e.id,
                "base_url": e.base_url if p.type != "mock" else None,
                "credential": rt.credential_source(e.id),
                "available": e.has_credential,
                "in_flight": e.in_flight,
                "cooling_down": e.cooling_down(now),
                "cooldown_remaining_s": round(max(e.cooldown_until - now, 0.0), 3),
                "rpm_limit": e.rpm_limit,
                "tpm_limit": e.tpm_limit,
                # The fullest of its per-model windows (RPM or TPM), 0..1; null when not tracked.
                "utilisation": max((float(r.get("utilisation") or 0.0) for r in per_model), default=None),
                "rate_limits": per_model,
                # Cached prompt tokens / prompt tokens as the provider reported them (this process).
                "prompt_cache": router.cache_hits.view(e.id) if router is not None else None,
            }
            if p.type == "mock":
                entry["reachability"] = {"state": "local"}
            else:
                task = asyncio.get_running_loop().create_task(probe(e.base_url))
                probes.append((entry, task))
            endpoints.append(entry)
        providers[p.name] = {"type": p.type, "health": p.health(), "endpoints": endpoints}
    for pc in rt.config.providers:
        providers.setdefault(
            pc.name,
            {"type": pc.type, "health": "unavailable", "endpoints": [], "note": "no adapter in this build"},
        )
    for entry, task in probes:
        entry["reachability"] = await task
    stats = getattr(getattr(rt.gateway, "router", None), "stats", None)
    affinity: dict[str, Any] = {"enabled": rt.config.cache.enable_session_affinity}
    affinity.update(stats() if callable(stats) else {"stats": "not reported by this router"})
    request_log = rt.request_log
    health = rt.provider_health()
    send(
        req,
        {
            "status": "healthy" if health and all(s == "healthy" for s in health.values()) else "degraded",
            "version": rt.version,
            "uptime": round(time.time() - rt.started_at, 3),
            "worker_pid": os.getpid(),
            "providers": providers,
            "affinity": affinity,
            **_backends(rt),
            "request_log": request_log.stats() if request_log is not None else None,
            "keys_loaded": len(rt.keys),
        },
    )


def _backends(rt: Runtime) -> dict[str, Any]:
    """Redis and S3 state from the scale-out layer when this build has one, else what the config says."""
    view = getattr(getattr(rt, "scaleout", None), "view", None)
    if callable(view):
        state: dict[str, Any] = view()
        return {"redis": state.get("redis"), "s3": state.get("s3")}

    def placeholder(configured: str) -> dict[str, Any]:
        if not configured:
            return {"configured": False, "state": "not configured"}
        return {"configured": True, "state": "configured, but not connected by this build"}

    return {
        "redis": placeholder(rt.config.redis.address),
        "s3": placeholder(rt.config.persistence.s3.bucket),
    }


ROUTES = [Route("GET", "/admin/status", status, family="admin", auth="admin")]
