"""Usage: a key's totals by model and day (`GET /admin/keys/{key_id}/usage`) and usage over time per
model, provider or key (`GET /admin/usage/series`, the dashboard's charts); see docs/admin-api.md."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from ensemble.errors import InvalidRequest
from ensemble.server.admin.common import cost_string, in_db, path_id, query, send
from ensemble.server.admin.keys import existing_key
from ensemble.server.http import Request
from ensemble.server.routes import Route
from ensemble.server.runtime import Runtime
from ensemble.storage import usage_daily, usage_series
from ensemble.storage.usage_daily import COLUMNS
from ensemble.storage.usage_series import BUCKETS, GROUPS, Bucket

S = TypeVar("S", bound=str)

_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")

MAX_BUCKETS = 1000  # 41 days of hours, 2.7 years of days
STEP = {"hour": timedelta(hours=1), "day": timedelta(days=1)}
DEFAULT_SPAN = {"hour": timedelta(hours=24), "day": timedelta(days=30)}
SERIES_PARAMS = ("since", "until", "bucket", "group", "key_id")


def _empty_usage() -> dict[str, int]:
    return dict.fromkeys(COLUMNS, 0)


def usage_json(u: dict[str, int]) -> dict[str, Any]:
    out: dict[str, Any] = {k: u[k] for k in COLUMNS if k != "cost_micro_dollars"}
    out["cost"] = cost_string(u["cost_micro_dollars"])
    out["cost_micro_dollars"] = u["cost_micro_dollars"]
    return out


# -- one key's usage by model and day ---------------------------------------------------------------


def day_param(params: dict[str, str], name: str) -> str | None:
    value = params.get(name)
    if value is None:
        return None
    if not _DAY.fullmatch(value):
        raise InvalidRequest(f"{name}: expected a date YYYY-MM-DD", code="invalid_query", param=name)
    try:
        datetime.strptime(value, "%Y-%m-%d")
    except ValueError:
        raise InvalidRequest(f"{name}: not a calendar date", code="invalid_query", param=name) from None
    return value


async def key_usage(rt: Runtime, req: Request) -> None:
    key_id = path_id(req, "key_id")
    params = query(req, ("since", "until"))
    since, until = day_param(params, "since"), day_param(params, "until")
    await existing_key(rt, key_id)
    assert rt.db is not None and rt.request_log is not None
    await rt.request_log.flush()  # this worker's buffered records count too
    rows = await usage_daily.for_key(rt.db, key_id, since, until)
    totals = _empty_usage()
    by_model: dict[str, dict[str, int]] = {}
    by_day: dict[str, dict[str, int]] = {}
    for day, model, values in rows:
        for bucket in (
            totals,
            by_model.setdefault(model, _empty_usage()),
            by_day.setdefault(day, _empty_usage()),
        ):
            for name, value in zip(COLUMNS, values, strict=True):
                bucket[name] += value
    send(
        req,
        {
            "key_id": key_id,
            "totals": usage_json(totals),
            "by_model": {m: usage_json(u) for m, u in by_model.items()},
            "by_day": {d: usage_json(u) for d, u in by_day.items()},
        },
    )


# -- usage over time: for each UTC hour or day in a range, zero-filled per group -------------------


def _choice(params: dict[str, str], name: str, allowed: tuple[S, ...]) -> S:
    """One of `allowed` (the first when absent)."""
    value = params.get(name, allowed[0])
    for option in allowed:
        if option == value:
            return option
    raise InvalidRequest(f"{name}: expected one of {', '.join(allowed)}", code="invalid_query", param=name)


def _instant(params: dict[str, str], name: str, *, date_is_whole_day: bool = False) -> datetime | None:
    """An ISO-8601 date or timestamp (UTC when it has no zone). A bare date in `until` means the end
    of that day, so `since=2025-01-01&until=2025-01-31` covers all of January."""
    value = params.get(name)
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value)
        if date_is_whole_day and len(value) == 10:
            when += timedelta(days=1)
    except (ValueError, OverflowError):
        raise InvalidRequest(
            f"{name}: expected an ISO-8601 date or timestamp (2025-01-31 or 2025-01-31T12:00:00Z)",
            code="invalid_query",
            param=name,
        ) from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _floor(when: datetime, bucket: Bucket) -> datetime:
    start = when.replace(minute=0, second=0, microsecond=0)
    return start.replace(hour=0) if bucket == "day" else start


def _text(when: datetime) -> str:
    """The form request_log.created_at is stored in, so string order is time order."""
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _label(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def bucket_starts(since: datetime, until: datetime, bucket: Bucket) -> list[str]:
    """Every bucket start from `since` (already floored) up to, not including, `until`."""
    count = -(-(until - since) // STEP[bucket])  # ceiling division of timedeltas
    if count > MAX_BUCKETS:
        raise InvalidRequest(
            f"since: the range spans {count} {bucket} buckets, at most {MAX_BUCKETS}: "
            f"narrow since/until or use a longer bucket",
            code="invalid_query",
            param="since",
        )
    return [_label(since + i * STEP[bucket]) for i in range(count)]


async def usage_series_route(rt: Runtime, req: Request) -> None:
    params = query(req, SERIES_PARAMS)
    bucket = _choice(params, "bucket", BUCKETS)
    group = _choice(params, "group", GROUPS)
    key_id = params.get("key_id")
    if key_id is not None and not 0 < len(key_id) <= 128:
        raise InvalidRequest("key_id: must be 1-128 characters", code="invalid_query", param="key_id")
    until = _instant(params, "until", date_is_whole_day=True) or datetime.now(UTC)
    since = _instant(params, "since") or until - DEFAULT_SPAN[bucket]
    since = _floor(since, bucket)
    if until <= since:
        raise InvalidRequest("until: must be later than since", code="invalid_query", param="until")
    starts = bucket_starts(since, until, bucket)

    assert rt.request_log is not None
    await rt.request_log.flush()  # this worker's buffered records count too
    rows = await in_db(
        rt,
        usage_series.series,
        bucket=bucket,
        group=group,
        since=_text(since),
        until=_text(until),
        key_id=key_id,
    )
    position = {start: i for i, start in enumerate(starts)}
    points: dict[str, list[list[int]]] = {}
    for start, name, values in rows:  # one row per (bucket, group)
        points.setdefault(name, [[0] * len(COLUMNS) for _ in starts])[position[start]] = list(values)

    def usage(values: list[int]) -> dict[str, Any]:
        return usage_json(dict(zip(COLUMNS, values, strict=True)))

    def summed(rows: list[list[int]]) -> list[int]:
        return [sum(column) for column in zip(*rows, strict=True)] if rows else [0] * len(COLUMNS)

    totals = {name: summed(per_bucket) for name, per_bucket in points.items()}
    cost, requests = COLUMNS.index("cost_micro_dollars"), COLUMNS.index("requests")
    order = sorted(points, key=lambda n: (-totals[n][cost], -totals[n][requests], n))
    send(
        req,
        {
            "bucket": bucket,
            "group": group,
            "since": _label(since),
            "until": _text(until),
            "buckets": starts,
            # Biggest spender first; each series has one point per bucket, in `buckets` order.
            "series": [
                {"name": n, "totals": usage(totals[n]), "points": [usage(p) for p in points[n]]}
                for n in order
            ],
            "totals": usage(summed(list(totals.values()))),
        },
    )


ROUTES = [
    Route("GET", "/admin/keys/{key_id}/usage", key_usage, family="admin", auth="admin"),
    Route("GET", "/admin/usage/series", usage_series_route, family="admin", auth="admin"),
]
