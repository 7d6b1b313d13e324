"""Searching the request log (`GET /admin/logs`, see docs/admin-api.md); usage/request_log.py writes it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiosqlite

# The columns one may filter on by equality; the names are formatted into the statement, so only these.
FILTERABLE = ("model", "provider", "key_id", "status", "http_status")

COLUMNS = (
    "request_id",
    "key_id",
    "model",
    "provider",
    "endpoint_id",
    "status",
    "http_status",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "cache_creation_tokens",
    "reasoning_tokens",
    "cost_micro_dollars",
    "latency_ms",
    "error",
    "created_at",
    # The routing decision: why this endpoint, and the estimated cache dollars involved.
    "route_reason",
    "cache_value_usd",
    "cost_penalty_usd",
)


@dataclass(frozen=True, slots=True)
class LogFilter:
    equal: list[tuple[str, str | int]]  # (column in FILTERABLE, value)
    since: str | None = None  # created_at >= this, in created_at's own text form


async def page(
    conn: aiosqlite.Connection, where: LogFilter, limit: int, offset: int
) -> tuple[list[dict[str, Any]], int]:
    """One page of matching entries, newest first (each a dict by COLUMNS), and how many match in all."""
    clauses: list[str] = []
    args: list[Any] = []
    for column, value in where.equal:
        assert column in FILTERABLE
        clauses.append(f"{column} = ?")
        args.append(value)
    if where.since is not None:
        clauses.append("created_at >= ?")
        args.append(where.since)
    clause = (" WHERE " + " AND ".join(clauses)) if clauses else ""
    async with conn.execute(f"SELECT count(*) FROM request_log{clause}", args) as cur:
        (total,) = await cur.fetchone() or (0,)
    async with conn.execute(
        f"SELECT {', '.join(COLUMNS)} "
        f"FROM request_log{clause} ORDER BY created_at DESC, seq DESC LIMIT ? OFFSET ?",
        [*args, limit, offset],
    ) as cur:
        rows = await cur.fetchall()
    return [dict(zip(COLUMNS, r, strict=True)) for r in rows], int(total)
