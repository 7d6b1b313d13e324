"""Routes about the gateway itself: health, models, and stored answers (status / retrieve)."""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson

from ensemble.errors import NotFound, Overloaded
from ensemble.server.http import Request
from ensemble.server.routes import Route
from ensemble.server.runtime import Runtime

log = logging.getLogger("ensemble.server")


async def health(rt: Runtime, req: Request) -> None:
    providers = rt.provider_health()
    serving = any(state == "healthy" for state in providers.values())
    body = {
        "status": "healthy" if serving and all(s != "degraded" for s in providers.values()) else "degraded",
        "version": rt.version,
        "uptime": round(time.time() - rt.started_at, 3),
        "providers": providers,
    }
    req.send(200, orjson.dumps(body))


def _model_entries(rt: Runtime) -> list[dict[str, Any]]:
    assert rt.gateway is not None
    out = []
    for name, providers in rt.gateway.router.models().items():
        model = providers[0].models[name]
        caps = set(model.capabilities)
        out.append(
            {
                "id": name,
                "provider": providers[0].name,
                "providers": [p.name for p in providers],
                "context_window": model.context_window,
                "max_output_tokens": model.max_output_tokens,
                "pricing": {
                    "input": model.pricing.input,
                    "output": model.pricing.output,
                    "cache_read": model.pricing.cache_read,
                    "cache_write": model.pricing.cache_write,
                },
                "capabilities": {c: c in caps for c in ("streaming", "tools", "thinking", "vision")},
                "kind": model.kind,  # chat | embedding: which routes answer for it
            }
        )
    return out


async def models(rt: Runtime, req: Request) -> None:
    req.send(200, orjson.dumps({"models": _model_entries(rt)}))


async def _stored(rt: Runtime, req: Request) -> tuple[Any, ...]:
    key = req.client
    request_id = req.params["request_id"]
    assert rt.db is not None and rt.request_log is not None
    await rt.request_log.flush()  # this worker's unwritten answers become visible
    async with rt.db.execute(
        "SELECT request_id, status, created_at, completed_at, model, provider, body, "
        "conversation IS NOT NULL FROM responses WHERE request_id = ? AND key_id = ?",
        (request_id, key.key_id),
    ) as cur:
        row = await cur.fetchone()
    found = tuple(row[:7]) if row is not None else await _shared(rt, request_id, key.key_id)
    if row is not None and row[7] and await rt.scaleout.response_deleted(key.key_id, request_id):
        # A Responses answer deleted on another instance (docs/responses.md): gone here too.
        await rt.db.execute(
            "UPDATE responses SET body = NULL, conversation = NULL WHERE request_id = ? AND key_id = ?",
            (request_id, key.key_id),
        )
        found = (*row[:6], None)
    # Not local: served by another instance, whose response is in S3 when persistence.s3 is set.
    if found is None:
        # The same answer for "never existed" and "belongs to another key": nothing leaks.
        raise NotFound(f"no request {request_id!r} for this API key", code="request_not_found")
    return found


async def _shared(rt: Runtime, request_id: str, key_id: str) -> tuple[Any, ...] | None:
    try:
        found = await rt.scaleout.fetch_response(request_id, key_id)
    except Exception as e:  # botocore/network errors stop here: the caller gets a clean 503
        log.warning("S3 lookup of %s failed: %s", request_id[:100], type(e).__name__)
        raise Overloaded("stored responses are unavailable right now; retry shortly") from None
    if found is None:
        return None
    return (
        found.request_id,
        found.status,
        found.created_at,
        found.completed_at,
        found.model,
        found.provider,
        found.body,
    )


async def status(rt: Runtime, req: Request) -> None:
    key = req.client
    live = rt.inflight.get(req.params["request_id"], key.key_id)
    if live is not None:  # being answered by this worker right now
        body = {
            "request_id": live.request_id,
            "status": live.status,
            "created_at": live.created_at,
            "completed_at": None,
            "model": live.model,
            "provider": live.provider or None,
        }
        req.send(200, orjson.dumps(body))
        return
    request_id, state, created_at, completed_at, model, provider, _ = await _stored(rt, req)
    body = {
        "request_id": request_id,
        "status": state,
        "created_at": created_at,
        "completed_at": completed_at,
        "model": model,
        "provider": provider,
    }
    req.send(200, orjson.dumps(body))


async def retrieve(rt: Runtime, req: Request) -> None:
    request_id, state, *_rest, body = await _stored(rt, req)
    if body is None:
        raise NotFound(
            f"request {request_id!r} has no stored answer (status: {state})", code="response_not_found"
        )
    req.send(200, bytes(body))


ROUTES = [
    Route("GET", "/health", health, auth="none"),
    Route("GET", "/api/v1/health", health, auth="none"),
    Route("GET", "/api/v1/models", models),
    Route("GET", "/api/v1/status/{request_id}", status),
    Route("GET", "/api/v1/retrieve/{request_id}", retrieve),
]
