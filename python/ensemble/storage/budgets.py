"""Customers with their budgets, and the durable spend of a budget period (see docs/budgets.md).

Spend is never stored twice: a period's spend is the sum of `usage_daily.cost_micro_dollars` over
its days, for one key or for every key of a customer. The request log writes those rows in the
same transaction as the log, and flushes them on SIGTERM, so what a restarted server reads here is
what was charged. The synchronous functions serve the CLI and the admin API (on their own
connection); the async ones the server's key and customer polling.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from typing import Any, Literal

import aiosqlite

from ensemble.storage.keys import budget_usd, now_iso

_CUSTOMER_COLUMNS = "id, name, email, created_at, budget_micro, budget_period"


class CustomerBudget:
    """What the server keeps of a customer: its budget (None: none)."""

    __slots__ = ("budget_micro", "customer_id", "period")

    def __init__(self, customer_id: str, budget_micro: int | None, period: str) -> None:
        self.customer_id = customer_id
        self.budget_micro = budget_micro
        self.period = period


def _customer(row: Any) -> dict[str, Any]:
    return {
        "customer_id": str(row[0]),
        "name": str(row[1]),
        "email": str(row[2]),
        "created_at": str(row[3]),
        "budget_usd": budget_usd(None if row[4] is None else int(row[4])),
        "budget_period": str(row[5]),
    }


def create_customer(
    conn: sqlite3.Connection,
    *,
    name: str,
    email: str = "",
    budget_micro: int | None = None,
    period: str = "month",
) -> dict[str, Any]:
    customer_id = "cus_" + uuid.uuid4().hex[:16]
    conn.execute(
        f"INSERT INTO customers ({_CUSTOMER_COLUMNS}, updated_at) VALUES (?,?,?,?,?,?,?)",
        (customer_id, name, email, now_iso(), budget_micro, period, int(time.time() * 1000)),
    )
    found = get_customer(conn, customer_id)
    assert found is not None
    return found


def get_customer(conn: sqlite3.Connection, customer_id: str) -> dict[str, Any] | None:
    row = conn.execute(f"SELECT {_CUSTOMER_COLUMNS} FROM customers WHERE id = ?", (customer_id,)).fetchone()
    return _customer(row) if row else None


def update_customer(
    conn: sqlite3.Connection,
    customer_id: str,
    *,
    name: str | None = None,
    email: str | None = None,
    budget_micro: int | Literal["keep"] | None = "keep",
    period: str | None = None,
) -> dict[str, Any] | None:
    """Change the given fields (None leaves one as is, but a None budget removes it)."""
    changes: dict[str, object] = {}
    if name is not None:
        changes["name"] = name
    if email is not None:
        changes["email"] = email
    if budget_micro != "keep":
        changes["budget_micro"] = budget_micro
    if period is not None:
        changes["budget_period"] = period
    changes["updated_at"] = int(time.time() * 1000)
    assignments = ", ".join(f"{column} = ?" for column in changes)  # column names are fixed above
    cur = conn.execute(f"UPDATE customers SET {assignments} WHERE id = ?", (*changes.values(), customer_id))
    return get_customer(conn, customer_id) if cur.rowcount else None


def page_customers(conn: sqlite3.Connection, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
    (total,) = conn.execute("SELECT count(*) FROM customers").fetchone()
    rows = conn.execute(
        f"SELECT {_CUSTOMER_COLUMNS} FROM customers ORDER BY created_at, id LIMIT ? OFFSET ?", (limit, offset)
    ).fetchall()
    return [_customer(r) for r in rows], int(total)


def key_spent_sync(conn: sqlite3.Connection, key_id: str, first_day: str) -> int:
    (total,) = conn.execute(
        "SELECT coalesce(sum(cost_micro_dollars), 0) FROM usage_daily WHERE key_id = ? AND day >= ?",
        (key_id, first_day),
    ).fetchone()
    return int(total)


def customer_spent_sync(conn: sqlite3.Connection, customer_id: str, first_day: str) -> int:
    (total,) = conn.execute(_CUSTOMER_SPENT, (customer_id, first_day)).fetchone()
    return int(total)


_CUSTOMER_SPENT = """
SELECT coalesce(sum(u.cost_micro_dollars), 0) FROM usage_daily u
WHERE u.key_id IN (SELECT id FROM api_keys WHERE customer_id = ?) AND u.day >= ?
"""


# -- the server (aiosqlite) ------------------------------------------------------------------------


async def key_spent(conn: aiosqlite.Connection, key_id: str, first_day: str) -> int:
    async with conn.execute(
        "SELECT coalesce(sum(cost_micro_dollars), 0) FROM usage_daily WHERE key_id = ? AND day >= ?",
        (key_id, first_day),
    ) as cur:
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def customer_spent(conn: aiosqlite.Connection, customer_id: str, first_day: str) -> int:
    async with conn.execute(_CUSTOMER_SPENT, (customer_id, first_day)) as cur:
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def load_changed_customers(
    conn: aiosqlite.Connection, since_ms: int
) -> tuple[list[CustomerBudget], int]:
    """Customers changed at or after `since_ms` (all when 0), and the newest change time seen."""
    async with conn.execute(
        "SELECT id, budget_micro, budget_period, updated_at FROM customers WHERE updated_at >= ?", (since_ms,)
    ) as cur:
        rows = await cur.fetchall()
    newest = since_ms
    out = []
    for row in rows:
        out.append(CustomerBudget(str(row[0]), None if row[1] is None else int(row[1]), str(row[2])))
        newest = max(newest, int(row[3]))
    return out, newest
