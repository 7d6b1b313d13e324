"""`GET /admin/logs`: the request log, newest first, filtered by model, provider, key, status, time."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ensemble import logs
from ensemble.errors import InvalidRequest
from ensemble.server.admin.common import cost_string, page, query, send
from ensemble.server.http import Request
from ensemble.server.routes import Route
from ensemble.server.runtime import Runtime
from ensemble.storage import request_logs
from ensemble.storage.request_logs import LogFilter

PARAMS = ("limit", "offset", "model", "provider", "status", "since", "key_id")


def _since(value: str) -> str:
    """An ISO-8601 date or timestamp as the UTC text form `created_at` is stored in."""
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidRequest(
            "since: expected an ISO-8601 date or timestamp (2025-01-31 or 2025-01-31T12:00:00Z)",
            code="invalid_query",
            param="since",
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _filter(params: dict[str, str]) -> LogFilter:
    equal: list[tuple[str, str | int]] = [
        (name, params[name]) for name in ("model", "provider", "key_id") if name in params
    ]
    if "status" in params:
        status = params["status"]
        if status in ("success", "error"):
            equal.append(("status", status))
        elif status.isascii() and status.isdigit() and len(status) == 3:
            equal.append(("http_status", int(status)))
        else:
            raise InvalidRequest(
                "status: expected success, error or a 3-digit HTTP status",
                code="invalid_query",
                param="status",
            )
    return LogFilter(equal, _since(params["since"]) if "since" in params else None)


def _entry(row: dict[str, Any]) -> dict[str, Any]:
    """A stored row as the API shows it: the cost also as a dollar string, secrets redacted from errors."""
    out: dict[str, Any] = {}
    for name, value in row.items():
        if name == "cost_micro_dollars":
            out["cost"] = cost_string(int(value))
        out[name] = (logs.redact(str(value)) or None) if name == "error" else value
    return out


async def request_log_page(rt: Runtime, req: Request) -> None:
    params = query(req, PARAMS)
    limit, offset = page(params)
    where = _filter(params)
    assert rt.db is not None and rt.request_log is not None
    await rt.request_log.flush()
    rows, total = await request_logs.page(rt.db, where, limit, offset)
    send(req, {"logs": [_entry(r) for r in rows], "total": total})


ROUTES = [Route("GET", "/admin/logs", request_log_page, family="admin", auth="admin")]
