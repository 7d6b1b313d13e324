"""Usage over time, from the request log: requests, errors, tokens by kind and cost per UTC hour or
day, grouped by model, provider or key (`GET /admin/usage/series`, see docs/admin-api.md).

`request_log.created_at` is stored as `YYYY-MM-DDTHH:MM:SS.mmmZ`, so a bucket is a prefix of it and a
time range is a string range over its index.
"""

from __future__ import annotations

import sqlite3
from typing import Literal

Bucket = Literal["hour", "day"]
Group = Literal["model", "provider", "key_id"]

BUCKETS: tuple[Bucket, ...] = ("hour", "day")
GROUPS: tuple[Group, ...] = ("model", "provider", "key_id")

_PREFIX = {"hour": 13, "day": 10}  # characters of created_at naming the bucket: YYYY-MM-DDTHH | YYYY-MM-DD

Row = tuple[
    str, str, tuple[int, ...]
]  # (bucket start as YYYY-MM-DDTHH:00:00Z, group value, usage_daily.COLUMNS)


def bucket_label(prefix: str, bucket: Bucket) -> str:
    """The start of the bucket a created_at prefix names, as an ISO-8601 UTC timestamp."""
    return prefix + (":00:00Z" if bucket == "hour" else "T00:00:00Z")


def series(
    conn: sqlite3.Connection,
    *,
    bucket: Bucket,
    group: Group,
    since: str,
    until: str,
    key_id: str | None = None,
) -> list[Row]:
    """Sums per (bucket, group) of the requests logged in [since, until), oldest bucket first.

    `since`/`until` are UTC timestamps in created_at's own text form; `bucket` and `group` come from
    the fixed tuples above, so formatting them into the statement is safe."""
    assert bucket in BUCKETS and group in GROUPS
    sql = (
        f"SELECT substr(created_at, 1, {_PREFIX[bucket]}) AS bucket, {group}, count(*), "
        "sum(status = 'error'), sum(input_tokens), sum(output_tokens), sum(cached_tokens), "
        "sum(cache_creation_tokens), sum(reasoning_tokens), sum(cost_micro_dollars) "
        "FROM request_log WHERE created_at >= ? AND created_at < ?"
    )
    args: list[str] = [since, until]
    if key_id is not None:
        sql += " AND key_id = ?"
        args.append(key_id)
    sql += f" GROUP BY bucket, {group} ORDER BY bucket, {group}"
    return [
        (bucket_label(str(r[0]), bucket), str(r[1]), tuple(int(v or 0) for v in r[2:]))
        for r in conn.execute(sql, args)
    ]
