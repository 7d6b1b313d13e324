"""Anthropic's Message Batches API shape (`/v1/messages/batches…`), for the official SDKs.

The same batches as the native API (one store), seen through Anthropic's objects: `message_batch`,
JSONL results whose `message` is rendered by the Anthropic egress (`api.anthropic.render_response`),
errors in Anthropic's error shape (family `anthropic`). Any model can be in such a batch: Anthropic
models go to the provider's batch API, others through the gateway, as for native batches.
"""

from __future__ import annotations

from typing import Any

import msgspec
import orjson

from ensemble import error_types
from ensemble.api import anthropic
from ensemble.api.common import decode_object
from ensemble.batch.store import BatchRow, iso_of_ms
from ensemble.errors import InvalidRequest
from ensemble.server.batch_routes import cancel_owned, owned, parse_items, request_counts, service
from ensemble.server.http import Request
from ensemble.server.routes import Route
from ensemble.server.runtime import Runtime
from ensemble.types import InferenceRequest, InferenceResponse


def _params(raw: dict[str, Any]) -> InferenceRequest:
    params = raw.get("params")
    if not isinstance(params, dict):
        raise InvalidRequest("params: required object (the Messages API request)", param="params")
    return anthropic.parse_request(orjson.dumps(params))


def batch_object(row: BatchRow) -> dict[str, Any]:
    status = (
        "ended" if row.status == "ended" else ("canceling" if row.status == "canceling" else "in_progress")
    )
    return {
        "id": row.id,
        "type": "message_batch",
        "processing_status": status,
        "request_counts": request_counts(row),
        "ended_at": row.ended_at,
        "created_at": row.created_at,
        "expires_at": iso_of_ms(row.expires_ms),
        "archived_at": None,
        "cancel_initiated_at": row.cancel_initiated_at,
        # Relative: the SDKs resolve it against their base URL (Ensemble may sit behind a proxy).
        "results_url": f"/v1/messages/batches/{row.id}/results" if status == "ended" else None,
    }


def result_line(custom_id: str, result: dict[str, Any]) -> bytes:
    kind = result.get("type")
    out: dict[str, Any]
    if kind == "succeeded":
        response = msgspec.convert(result["response"], InferenceResponse)
        return (
            b'{"custom_id":'
            + orjson.dumps(custom_id)
            + b',"result":{"type":"succeeded","message":'
            + anthropic.render_response(response)
            + b"}}\n"
        )
    if kind == "errored":
        error = result.get("error") or {}
        out = {
            "type": "errored",
            "error": {
                "type": "error",
                "error": {
                    # the stored canonical type in Anthropic's words (docs/errors.md)
                    "type": error_types.for_ingress("anthropic", str(error.get("type")), 0)[0],
                    "message": str(error.get("message") or "the request failed"),
                },
            },
        }
    else:
        out = {"type": kind}
    return orjson.dumps({"custom_id": custom_id, "result": out}) + b"\n"


async def create(rt: Runtime, req: Request) -> None:
    key = req.client
    body = decode_object(await req.body(rt.config.server.max_request_bytes))
    svc = service(rt)
    items = parse_items(svc, key, body.get("requests"), _params)
    batch_id = await svc.submit(key, items, origin="anthropic", prefix="msgbatch_")
    row = await svc.store.get(batch_id, key.key_id)
    assert row is not None
    req.send(200, orjson.dumps(batch_object(row)))


def _limit(req: Request) -> int:
    query = req.scope.query_string or ""
    params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
    raw = params.get("limit", "20")
    if not raw.isdigit() or not 1 <= int(raw) <= 1000:
        raise InvalidRequest("limit: must be an integer from 1 to 1000", param="limit")
    return int(raw)


def _cursor(req: Request, name: str) -> str | None:
    query = req.scope.query_string or ""
    for part in query.split("&"):
        if part.startswith(name + "="):
            return part.split("=", 1)[1] or None
    return None


async def list_batches(rt: Runtime, req: Request) -> None:
    key = req.client
    limit = _limit(req)
    rows = await service(rt).store.list_batches(
        key.key_id, limit + 1, _cursor(req, "before_id"), _cursor(req, "after_id")
    )
    data = [batch_object(r) for r in rows[:limit]]
    body = {
        "data": data,
        "has_more": len(rows) > limit,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }
    req.send(200, orjson.dumps(body))


async def retrieve(rt: Runtime, req: Request) -> None:
    req.send(200, orjson.dumps(batch_object(await owned(rt, req))))


async def results(rt: Runtime, req: Request) -> None:
    row = await owned(rt, req)
    if row.status != "ended":
        raise InvalidRequest(
            f"message batch {row.id} is still processing; results are available once it has ended",
            code="batch_not_ended",
        )
    lines = [
        result_line(custom_id, result) for custom_id, _rid, result in await service(rt).store.results(row.id)
    ]
    req.send(200, b"".join(lines), content_type="application/x-jsonl")


async def cancel(rt: Runtime, req: Request) -> None:
    req.send(200, orjson.dumps(batch_object(await cancel_owned(rt, req))))


ROUTES = [
    Route("POST", "/v1/messages/batches", create, family="anthropic"),
    Route("GET", "/v1/messages/batches", list_batches, family="anthropic"),
    Route("GET", "/v1/messages/batches/{batch_id}", retrieve, family="anthropic"),
    Route("GET", "/v1/messages/batches/{batch_id}/results", results, family="anthropic"),
    Route("POST", "/v1/messages/batches/{batch_id}/cancel", cancel, family="anthropic"),
]
