"""Batch routes: the native `/api/v1/batch…` API (see the README's routes).

Only the key that created a batch sees it: another key gets the same 404 as for an id that never
existed.
"""

from __future__ import annotations

from typing import Any

import orjson

from ensemble.api import native
from ensemble.api.common import decode_object
from ensemble.batch.service import MAX_ITEMS, BatchService
from ensemble.batch.store import BatchRow, iso_of_ms
from ensemble.errors import EnsembleError, InvalidRequest, NotFound
from ensemble.server.http import Request
from ensemble.server.routes import Route
from ensemble.server.runtime import Runtime
from ensemble.storage.keys import KeyRecord
from ensemble.types import InferenceRequest

MAX_CUSTOM_ID = 128


def service(rt: Runtime) -> BatchService:
    if rt.batches is None:
        raise NotFound("batches are not available", code="batch_unavailable")
    return rt.batches


def parse_items(
    svc: BatchService, key: KeyRecord, requests: Any, parse: Any, field: str = "requests"
) -> list[tuple[str, InferenceRequest]]:
    """Validate every item up front; the first problem is a 400 naming `requests[i].field`."""
    if not isinstance(requests, list) or not requests:
        raise InvalidRequest(f"{field}: must be a non-empty list of requests", param=field)
    if len(requests) > MAX_ITEMS:
        raise InvalidRequest(f"{field}: at most {MAX_ITEMS} requests per batch", param=field)
    seen: set[str] = set()
    items: list[tuple[str, InferenceRequest]] = []
    for i, raw in enumerate(requests):
        where = f"{field}[{i}]"
        if not isinstance(raw, dict):
            raise InvalidRequest(f"{where}: must be an object", param=where)
        custom_id = raw.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id or len(custom_id) > MAX_CUSTOM_ID:
            raise InvalidRequest(
                f"{where}.custom_id: must be a string of 1-{MAX_CUSTOM_ID} characters",
                param=f"{where}.custom_id",
            )
        if custom_id in seen:
            raise InvalidRequest(
                f"{where}.custom_id: {custom_id!r} is used twice", param=f"{where}.custom_id"
            )
        seen.add(custom_id)
        try:
            request = parse(raw)
            request.stream = False  # a batch answer is stored whole
            svc.check_item(key, request)
        except EnsembleError as e:
            # "temperature: must be …" becomes "requests[3].temperature: must be …"
            named = bool(e.param) and e.message.startswith(f"{e.param}:")
            e.message = f"{where}.{e.message}" if named else f"{where}: {e.message}"
            e.param = f"{where}.{e.param}" if e.param else where
            raise
        items.append((custom_id, request))
    return items


def _native_fields(raw: dict[str, Any]) -> InferenceRequest:
    fields = {k: v for k, v in raw.items() if k != "custom_id"}
    return native.parse_fields(fields)


def status_of(row: BatchRow) -> str:
    if row.status == "ended":
        return "ended"
    if row.status == "canceling":
        return "canceling"
    counts = row.counts
    if counts["queued"] == row.request_count and not counts["attempted"]:
        return "submitted"
    return "in_progress"


def native_view(row: BatchRow) -> dict[str, Any]:
    return {
        "batch_id": row.id,
        "status": status_of(row),
        "request_count": row.request_count,
        "request_counts": request_counts(row),
        "created_at": row.created_at,
        "ended_at": row.ended_at,
        "expires_at": iso_of_ms(row.expires_ms),
        "cancel_initiated_at": row.cancel_initiated_at,
        "results_url": f"/api/v1/batch/{row.id}/results",
    }


async def owned(rt: Runtime, req: Request) -> BatchRow:
    """The caller's batch named in the path (404 for another key's: nothing leaks)."""
    key = req.client
    batch_id = req.params["batch_id"]
    row = await service(rt).store.get(batch_id, key.key_id)
    if row is None:
        raise NotFound(f"no batch {batch_id!r} for this API key", code="batch_not_found")
    return row


async def create(rt: Runtime, req: Request) -> None:
    key = req.client
    body = decode_object(await req.body(rt.config.server.max_request_bytes))
    svc = service(rt)
    items = parse_items(svc, key, body.get("requests"), _native_fields)
    batch_id = await svc.submit(key, items, origin="native")
    row = await svc.store.get(batch_id, key.key_id)
    assert row is not None
    req.send(
        200,
        orjson.dumps(
            {
                "batch_id": batch_id,
                "status": "submitted",
                "request_count": row.request_count,
                "created_at": row.created_at,
            }
        ),
    )


async def get(rt: Runtime, req: Request) -> None:
    req.send(200, orjson.dumps(native_view(await owned(rt, req))))


async def results(rt: Runtime, req: Request) -> None:
    """JSONL, one line per finished item in submission order (so far, while the batch runs)."""
    row = await owned(rt, req)
    lines = [
        b'{"custom_id":' + orjson.dumps(custom_id) + b',"result":' + orjson.dumps(result) + b"}\n"
        for custom_id, _request_id, result in await service(rt).store.results(row.id)
    ]
    req.send(
        200,
        b"".join(lines),
        content_type="application/x-ndjson",
        headers=[("x-ensemble-batch-status", status_of(row))],
    )


async def cancel_owned(rt: Runtime, req: Request) -> BatchRow:
    """Cancel the caller's batch named in the path (both batch APIs' cancel route); its row after."""
    key = req.client
    row = await owned(rt, req)
    await service(rt).store.cancel(row.id, key.key_id)
    updated = await service(rt).store.get(row.id, key.key_id)
    assert updated is not None
    return updated


async def cancel(rt: Runtime, req: Request) -> None:
    req.send(200, orjson.dumps(native_view(await cancel_owned(rt, req))))


ROUTES = [
    Route("POST", "/api/v1/batch", create),
    Route("GET", "/api/v1/batch/{batch_id}", get),
    Route("GET", "/api/v1/batch/{batch_id}/results", results),
    Route("POST", "/api/v1/batch/{batch_id}/cancel", cancel),
]


def request_counts(row: BatchRow) -> dict[str, int]:
    """A batch's item counts as both batch APIs show them (queued, running and submitted are all
    still processing)."""
    c = row.counts
    return {
        "processing": c["queued"] + c["running"] + c["submitted"],
        "succeeded": c["succeeded"],
        "errored": c["errored"],
        "canceled": c["canceled"],
        "expired": c["expired"],
    }
