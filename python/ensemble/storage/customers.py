"""Customers: the accounts API keys are grouped under, each with an optional spend budget
(`/admin/customers`, `ensemble customers`; see docs/admin-api.md and docs/budgets.md).

Synchronous, like the key table's functions: the CLI calls them directly and the admin API on its
own connection off the event loop. The server's polling reads what changed with `load_changed`.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal

import aiosqlite

from ensemble.storage.keys import budget_usd, now_iso

_COLUMNS = "id, name, email, created_at, budget_micro, budget_period"


@dataclass(frozen=True, slots=True)
class Customer:
    customer_id: str
    name: str
    email: str
    created_at: str
    budget_micro: int | None = None  # spend ceiling per period in micro-dollars; None: no budget
    budget_period: str = "month"

    def as_json(self) -> dict[str, Any]:
        return {
            "customer_id": self.customer_id,
            "name": self.name,
            "email": self.email,
            "created_at": self.created_at,
            "budget_usd": budget_usd(self.budget_micro),
            "budget_period": self.budget_period,
        }


def _customer(row: Any) -> Customer:
    return Customer(
        str(row[0]),
        str(row[1]),
        str(row[2]),
        str(row[3]),
        None if row[4] is None else int(row[4]),
        str(row[5]),
    )


def create(
    conn: sqlite3.Connection,
    *,
    name: str,
    email: str = "",
    budget_micro: int | None = None,
    period: str = "month",
) -> Customer:
    customer = Customer("cus_" + uuid.uuid4().hex[:16], name, email, now_iso(), budget_micro, period)
    conn.execute(
        f"INSERT INTO customers ({_COLUMNS}, updated_at) VALUES (?,?,?,?,?,?,?)",
        (
            customer.customer_id,
            name,
            email,
            customer.created_at,
            budget_micro,
            period,
            int(time.time() * 1000),
        ),
    )
    return customer


def get(conn: sqlite3.Connection, customer_id: str) -> Customer | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM customers WHERE id = ?", (customer_id,)).fetchone()
    return _customer(row) if row else None


def update(
    conn: sqlite3.Connection,
    customer_id: str,
    *,
    name: str | None = None,
    email: str | None = None,
    budget_micro: int | Literal["keep"] | None = "keep",
    period: str | None = None,
) -> Customer | None:
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
    return get(conn, customer_id) if cur.rowcount else None


def page(conn: sqlite3.Connection, limit: int, offset: int) -> tuple[list[Customer], int]:
    """One page of customers, oldest first, and how many there are in all."""
    (total,) = conn.execute("SELECT count(*) FROM customers").fetchone()
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM customers ORDER BY created_at, id LIMIT ? OFFSET ?", (limit, offset)
    ).fetchall()
    return [_customer(r) for r in rows], int(total)


async def load_changed(conn: aiosqlite.Connection, since_ms: int) -> tuple[list[Customer], int]:
    """Customers changed at or after `since_ms` (all when 0), and the newest change time seen."""
    async with conn.execute(
        f"SELECT {_COLUMNS}, updated_at FROM customers WHERE updated_at >= ?", (since_ms,)
    ) as cur:
        rows = await cur.fetchall()
    newest = since_ms
    out = []
    for row in rows:
        out.append(_customer(row))
        newest = max(newest, int(row[6]))
    return out, newest
