"""Provider batches' budget reservations on disk (docs/budgets.md).

A batch sent to a provider's batch API is reserved in full when it is submitted, and its items
finish one by one, hours later, in whichever worker collects them, possibly after a restart. So
each item's worst case is a row per budget it was reserved on (`key:<id>`, `customer:<id>`),
written in the batch's own transaction. Whoever settles an item deletes its rows and settles what
the delete returned, so each is settled exactly once; a process loading a budget adds the rows of
items still pending to what the budget holds (`outstanding`).
"""

from __future__ import annotations

from dataclasses import dataclass

import aiosqlite

PENDING = "('queued', 'running', 'submitted')"  # batch item states that have not settled


@dataclass(slots=True)
class ItemHold:
    """One item's reservation: `amount` micro-dollars on each budget in `scopes`."""

    scopes: list[str]
    amount: int
    reserved_ms: int  # counts in the budget period containing it


async def write(conn: aiosqlite.Connection, batch_id: str, holds: list[tuple[int, ItemHold]]) -> None:
    """The holds of a batch's items (by index), inside the caller's transaction."""
    await conn.executemany(
        "INSERT INTO budget_holds (batch_id, idx, scope, amount, reserved_ms) VALUES (?,?,?,?,?)",
        [(batch_id, idx, scope, h.amount, h.reserved_ms) for idx, h in holds for scope in h.scopes],
    )


def _grouped(rows: list[tuple[int, str, int, int]]) -> list[ItemHold]:
    by_item: dict[int, ItemHold] = {}
    for idx, scope, amount, reserved_ms in rows:
        held = by_item.setdefault(int(idx), ItemHold([], int(amount), int(reserved_ms)))
        held.scopes.append(str(scope))
    return list(by_item.values())


async def take(conn: aiosqlite.Connection, batch_id: str, idx: int) -> ItemHold | None:
    """Remove one item's hold: the caller settles it (None: nothing was reserved, or already settled)."""
    async with conn.execute(
        "DELETE FROM budget_holds WHERE batch_id = ? AND idx = ? RETURNING idx, scope, amount, reserved_ms",
        (batch_id, idx),
    ) as cur:
        rows = list(await cur.fetchall())
    held = _grouped(rows)  # type: ignore[arg-type]
    return held[0] if held else None


async def take_in_state(conn: aiosqlite.Connection, batch_id: str, state: str) -> list[ItemHold]:
    """Remove the holds of a batch's items now in `state` (canceled or expired in bulk)."""
    async with conn.execute(
        "DELETE FROM budget_holds WHERE batch_id = ? AND idx IN "
        "(SELECT idx FROM batch_items WHERE batch_id = ? AND state = ?) "
        "RETURNING idx, scope, amount, reserved_ms",
        (batch_id, batch_id, state),
    ) as cur:
        rows = list(await cur.fetchall())
    return _grouped(rows)  # type: ignore[arg-type]


async def outstanding(conn: aiosqlite.Connection, scope: str, since_ms: int) -> int:
    """What a budget still holds for pending items reserved in the period that began at `since_ms`
    (a row an interrupted settlement left behind, on an item that has finished, no longer counts)."""
    async with conn.execute(
        "SELECT coalesce(sum(h.amount), 0) FROM budget_holds h JOIN batch_items i "
        f"ON i.batch_id = h.batch_id AND i.idx = h.idx WHERE h.scope = ? AND h.reserved_ms >= ? "
        f"AND i.state IN {PENDING}",
        (scope, since_ms),
    ) as cur:
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def database_id(conn: aiosqlite.Connection) -> str:
    """This SQLite file's identity (its share of a budget's spend in Redis is named after it)."""
    async with conn.execute("SELECT id FROM database_identity LIMIT 1") as cur:
        row = await cur.fetchone()
    return str(row[0]) if row else "unknown"
