"""Keeping the process's budget accounts in step with the database: keys and customers as they
load or change, each with the durable spend of its current period (docs/budgets.md)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

import aiosqlite

from ensemble.budget.ledger import Budgets
from ensemble.budget.period import bounds, first_day
from ensemble.storage import customers, usage_daily
from ensemble.storage.keys import KeyRecord


class BudgetLoader:
    def __init__(self, budgets: Budgets, flush: Callable[[], Awaitable[None]] | None = None) -> None:
        self.budgets = budgets
        self.flush = flush  # the request log's: spend settled here must be on disk before it is read
        self._customers_seen_ms = 0
        # Customers in this instance's database, with their budgets: what it shares through Redis
        # (budget/sync.py) with instances whose databases do not hold them.
        self.local_customers: dict[str, tuple[int | None, str]] = {}

    def _changed(self, kind: str, owner: str, limit: int | None, period: str) -> bool:
        """Whether a (re-)read record changes the account: the polls read the newest row again each
        time, and re-reading spend then would only replace exact in-memory counts with older ones."""
        acc = self.budgets.get(kind, owner)
        if acc is None:
            return limit is not None
        return limit is None or acc.limit != limit or acc.period != period

    def _first_day(self, period: str) -> str:
        return first_day(bounds(period, self.budgets.clock())[0])

    async def keys_changed(
        self, db: aiosqlite.Connection, records: Iterable[tuple[bytes, KeyRecord]]
    ) -> None:
        budgeted = [
            r
            for _, r in records
            if r.budget_micro is not None or self.budgets.get("key", r.key_id) is not None
        ]
        if not budgeted:
            return
        if self.flush is not None:
            await self.flush()
        for r in budgeted:
            if r.budget_micro is None or r.status == "revoked":
                self.budgets.configure("key", r.key_id, None, r.budget_period, None)
                continue
            spent = await usage_daily.key_spent(db, r.key_id, self._first_day(r.budget_period))
            self.budgets.configure("key", r.key_id, r.budget_micro, r.budget_period, spent)

    def keys_shared(self, records: Iterable[tuple[bytes, KeyRecord]]) -> None:
        """Key records from Redis: the shared budget (Redis) knows their spend."""
        for _, r in records:
            limit = None if r.status == "revoked" else r.budget_micro
            if self._changed("key", r.key_id, limit, r.budget_period):
                self.budgets.configure("key", r.key_id, limit, r.budget_period, None)

    async def sync_customers(self, db: aiosqlite.Connection) -> int:
        changed, newest = await customers.load_changed(db, self._customers_seen_ms)
        for c in changed:
            self.local_customers[c.customer_id] = (c.budget_micro, c.budget_period)
        wanted = [
            c for c in changed if self._changed("customer", c.customer_id, c.budget_micro, c.budget_period)
        ]
        if wanted and self.flush is not None and self._customers_seen_ms:
            await self.flush()
        for c in wanted:
            spent = None
            if c.budget_micro is not None:
                spent = await usage_daily.customer_spent(db, c.customer_id, self._first_day(c.budget_period))
            self.budgets.configure("customer", c.customer_id, c.budget_micro, c.budget_period, spent)
        # Rows changed within the same millisecond as the newest are read again next time (>=).
        self._customers_seen_ms = newest
        return len(changed)
