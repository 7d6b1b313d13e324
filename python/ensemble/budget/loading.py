"""Keeping the process's budget accounts in step with the database: keys and customers as they
load or change, each with the durable spend of its current period and what provider batches still
hold of it (docs/budgets.md); with Redis, each account's seed (budget/sync.py) too."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

import aiosqlite

from ensemble.budget import holds
from ensemble.budget.ledger import Account, Budgets
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
        self.db: aiosqlite.Connection | None = None
        self.database_id = ""

    async def attach(self, db: aiosqlite.Connection) -> None:
        """The database seeds are read from (`read`), and its identity."""
        self.db = db
        self.database_id = await holds.database_id(db)

    def _changed(self, kind: str, owner: str, limit: int | None, period: str) -> bool:
        """Whether a (re-)read record changes the account: the polls read the newest row again each
        time, and re-reading spend then would only replace exact in-memory counts with older ones."""
        acc = self.budgets.get(kind, owner)
        if acc is None:
            return limit is not None
        return limit is None or acc.limit != limit or acc.period != period

    async def _durable(self, db: aiosqlite.Connection, kind: str, owner: str, period: str) -> tuple[int, int]:
        """(spend, provider batches' holds) of the current period, as this database recorded them."""
        starts = bounds(period, self.budgets.clock())[0]
        spent_of = usage_daily.key_spent if kind == "key" else usage_daily.customer_spent
        spent = await spent_of(db, owner, first_day(starts))
        return spent, await holds.outstanding(db, f"{kind}:{owner}", int(starts * 1000))

    async def read(self, accounts: list[Account]) -> None:
        """Seeds for accounts configured from Redis (keys and customers other instances shared):
        this database may have recorded spend on them before their budget reached it."""
        if self.db is None:
            return
        if self.flush is not None:
            await self.flush()
        for acc in accounts:
            spent, held = await self._durable(self.db, acc.kind, acc.owner, acc.period)
            if acc.seed is None:  # (not configured again while this read waited)
                acc.seed = spent + held

    async def keys_changed(
        self, db: aiosqlite.Connection, records: Iterable[tuple[bytes, KeyRecord]]
    ) -> None:
        # A key poll reads the newest row again each time: only a change of budget re-reads spend.
        wanted = [r for _, r in records if self._changed("key", r.key_id, self._limit(r), r.budget_period)]
        if not wanted:
            return
        if self.flush is not None:
            await self.flush()
        for r in wanted:
            limit = self._limit(r)
            if limit is None:
                self.budgets.configure("key", r.key_id, None, r.budget_period, None)
                continue
            spent, held = await self._durable(db, "key", r.key_id, r.budget_period)
            self.budgets.configure("key", r.key_id, limit, r.budget_period, spent, held)

    @staticmethod
    def _limit(r: KeyRecord) -> int | None:
        return None if r.status == "revoked" else r.budget_micro

    def keys_shared(self, records: Iterable[tuple[bytes, KeyRecord]]) -> None:
        """Key records from Redis: Redis knows their spend; what this database recorded before
        the budget reached it is read as their seed before their first round (`read`)."""
        for _, r in records:
            limit = self._limit(r)
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
            spent, held = None, 0
            if c.budget_micro is not None:
                spent, held = await self._durable(db, "customer", c.customer_id, c.budget_period)
            self.budgets.configure("customer", c.customer_id, c.budget_micro, c.budget_period, spent, held)
        # Rows changed within the same millisecond as the newest are read again next time (>=).
        self._customers_seen_ms = newest
        return len(changed)
