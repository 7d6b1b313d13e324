"""Customers: the accounts API keys are grouped under (`/admin/customers`, see docs/admin-api.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiosqlite


@dataclass(frozen=True, slots=True)
class Customer:
    customer_id: str
    name: str
    email: str
    created_at: str

    def as_json(self) -> dict[str, Any]:
        return {
            "customer_id": self.customer_id,
            "name": self.name,
            "email": self.email,
            "created_at": self.created_at,
        }


async def insert(conn: aiosqlite.Connection, customer: Customer) -> None:
    await conn.execute(
        "INSERT INTO customers (id, name, email, created_at) VALUES (?,?,?,?)",
        (customer.customer_id, customer.name, customer.email, customer.created_at),
    )


async def page(conn: aiosqlite.Connection, limit: int, offset: int) -> tuple[list[Customer], int]:
    """One page of customers, oldest first, and how many there are in all."""
    async with conn.execute("SELECT count(*) FROM customers") as cur:
        (total,) = await cur.fetchone() or (0,)
    async with conn.execute(
        "SELECT id, name, email, created_at FROM customers ORDER BY created_at, id LIMIT ? OFFSET ?",
        (limit, offset),
    ) as cur:
        rows = await cur.fetchall()
    return [Customer(r[0], r[1], r[2], r[3]) for r in rows], int(total)
