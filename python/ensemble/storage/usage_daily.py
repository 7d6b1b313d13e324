"""Per-key daily usage totals (the `usage_daily` table the request log keeps up to date).

`COLUMNS` are the counters every usage view reports, in the order the admin API lists them; the
series over the request log (usage_series.py) sums the same ones.
"""

from __future__ import annotations

import aiosqlite

COLUMNS = (
    "requests",
    "errors",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "cache_creation_tokens",
    "reasoning_tokens",
    "cost_micro_dollars",
)

Row = tuple[str, str, list[int]]  # (day YYYY-MM-DD, model, COLUMNS)


async def for_key(conn: aiosqlite.Connection, key_id: str, since: str | None, until: str | None) -> list[Row]:
    """The key's rows between two days (inclusive, either open), by day then model."""
    sql = f"SELECT day, model, {', '.join(COLUMNS)} FROM usage_daily WHERE key_id = ?"
    args: list[str] = [key_id]
    if since:
        sql += " AND day >= ?"
        args.append(since)
    if until:
        sql += " AND day <= ?"
        args.append(until)
    async with conn.execute(sql + " ORDER BY day, model", args) as cur:
        rows = await cur.fetchall()
    return [(str(row[0]), str(row[1]), [int(v) for v in row[2:]]) for row in rows]
