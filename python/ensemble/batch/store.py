"""Batches in SQLite: the durable state every worker (and every process on the same file) shares.

Work is handed out with leases: a worker claims items with one `UPDATE … RETURNING` (atomic in
SQLite, so two workers never claim the same item) and owns them until `lease_until_ms`; a worker
that died simply lets its leases run out and another worker picks the items up. Every transition
after the claim is conditional on still owning the lease, so a slow worker whose lease was taken
over cannot overwrite the new owner's result.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiosqlite
import orjson

from ensemble.budget import holds
from ensemble.budget.holds import ItemHold
from ensemble.storage.keys import now_iso

TX_TRIES = 200  # x 5 ms: a second for another coroutine's read to finish before a BEGIN/COMMIT fails

# States an item can be in; the last four are final.
PENDING_STATES = ("queued", "running", "submitted")
FINAL_STATES = ("succeeded", "errored", "canceled", "expired")


def now_ms() -> int:
    return int(time.time() * 1000)


def iso_of_ms(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


@dataclass(slots=True)
class NewItem:
    custom_id: str
    request_id: str
    model: str
    request: bytes
    route: str  # gateway | provider_batch
    hold: ItemHold | None = None  # its budget reservation (provider_batch items on a budget)


@dataclass(slots=True)
class BatchRow:
    id: str
    key_id: str
    origin: str
    status: str
    request_count: int
    created_at: str
    created_ms: int
    expires_ms: int
    ended_at: str | None
    cancel_initiated_at: str | None
    counts: dict[str, int]


@dataclass(slots=True)
class ClaimedItem:
    batch_id: str
    idx: int
    custom_id: str
    request_id: str
    model: str
    request: bytes
    key_id: str


_BATCH_COLUMNS = "id, key_id, origin, status, request_count, created_at, created_ms, expires_ms, ended_at, cancel_initiated_at"


class BatchStore:
    def __init__(self, conn: aiosqlite.Connection) -> None:
        self.conn = conn
        # One connection, many coroutines (concurrent submissions, the runner): a second BEGIN on
        # it while a transaction is open fails ("cannot start a transaction within a transaction"),
        # so transactions take turns.
        self._tx_lock = asyncio.Lock()
        # Budget holds of items canceled or expired before they ran, once their transaction
        # committed: the batch service gives them back to the budgets (batch/budget.py).
        self.on_released: Callable[[list[ItemHold]], None] = lambda released: None

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[None]:
        async with self._tx_lock:
            await self._retrying("BEGIN IMMEDIATE")
            try:
                yield
                await self._retrying("COMMIT")
            except BaseException:
                await self.conn.execute("ROLLBACK")
                raise

    async def _retrying(self, statement: str) -> None:
        """BEGIN or COMMIT, waiting out another coroutine's read still stepping on this connection:
        SQLite refuses to commit while a statement is in progress, and refuses at once (no busy
        wait) to start writing from a read snapshot another connection has since written past.
        Either ends within a few loop turns."""
        for attempt in range(TX_TRIES):
            try:
                await self.conn.execute(statement)
                return
            except sqlite3.OperationalError as e:
                transient = "statements in progress" in str(e) or "database is locked" in str(e)
                if not transient or attempt == TX_TRIES - 1:
                    raise
                await asyncio.sleep(0.005)

    async def close(self) -> None:
        await self.conn.close()

    # -- submission ------------------------------------------------------------------------------

    async def create(
        self, batch_id: str, key_id: str, origin: str, items: list[NewItem], *, ready_ms: int, expires_ms: int
    ) -> None:
        now = now_ms()
        async with self._transaction():
            await self.conn.execute(
                "INSERT INTO batches (id, key_id, origin, status, request_count, created_at, created_ms, "
                "ready_ms, expires_ms) VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    batch_id,
                    key_id,
                    origin,
                    "in_progress",
                    len(items),
                    iso_of_ms(now),
                    now,
                    ready_ms,
                    expires_ms,
                ),
            )
            await self.conn.executemany(
                "INSERT INTO batch_items (batch_id, idx, custom_id, request_id, model, request, route, state) "
                "VALUES (?,?,?,?,?,?,?, 'queued')",
                [
                    (batch_id, i, it.custom_id, it.request_id, it.model, it.request, it.route)
                    for i, it in enumerate(items)
                ],
            )
            await holds.write(self.conn, batch_id, [(i, it.hold) for i, it in enumerate(items) if it.hold])

    async def join_fallback(
        self,
        new_batch_id: str,
        key_id: str,
        item: NewItem,
        *,
        window_ms: int,
        max_size: int,
        expires_ms: int,
        provider: str = "",
    ) -> str:
        """Add one rate-limited request to this key's collecting fallback batch (or start one).

        A batch collects for `window_ms` after its first request, or until it holds `max_size`;
        then the runner starts it. Returns the batch id. The pending row in `responses` makes
        /api/v1/status answer `pending` for the request id right away."""
        now = now_ms()
        async with self._transaction():
            async with self.conn.execute(
                "SELECT id, request_count FROM batches WHERE key_id = ? AND origin = 'fallback' "
                "AND status = 'in_progress' AND ready_ms > ? AND request_count < ? "
                "ORDER BY created_ms LIMIT 1",
                (key_id, now, max_size),
            ) as cur:
                row = await cur.fetchone()
            if row is None:
                batch_id, idx = new_batch_id, 0
                await self.conn.execute(
                    "INSERT INTO batches (id, key_id, origin, status, request_count, created_at, created_ms, "
                    "ready_ms, expires_ms) VALUES (?,?,'fallback','in_progress',1,?,?,?,?)",
                    (
                        batch_id,
                        key_id,
                        iso_of_ms(now),
                        now,
                        now + window_ms if max_size > 1 else now,
                        expires_ms,
                    ),
                )
            else:
                batch_id, idx = str(row[0]), int(row[1])
                full = idx + 1 >= max_size
                await self.conn.execute(
                    "UPDATE batches SET request_count = request_count + 1"
                    + (", ready_ms = ?" if full else "")
                    + " WHERE id = ?",
                    (now, batch_id) if full else (batch_id,),
                )
            await self.conn.execute(
                "INSERT INTO batch_items (batch_id, idx, custom_id, request_id, model, request, route, state) "
                "VALUES (?,?,?,?,?,?,?, 'queued')",
                (batch_id, idx, item.custom_id, item.request_id, item.model, item.request, item.route),
            )
            if item.hold is not None:
                await holds.write(self.conn, batch_id, [(idx, item.hold)])
            await self.conn.execute(
                "INSERT INTO responses (request_id, key_id, status, model, provider, created_at) "
                "VALUES (?,?,'pending',?,?,?) ON CONFLICT (key_id, request_id) DO NOTHING",
                (item.request_id, key_id, item.model, provider, now_iso()),
            )
        return batch_id

    # -- reading ---------------------------------------------------------------------------------

    async def _counts(self, batch_id: str) -> dict[str, int]:
        counts = dict.fromkeys(("queued", "running", "submitted", *FINAL_STATES), 0)
        counts["attempted"] = 0  # items that have been started at least once (queued again after a 429)
        async with self.conn.execute(
            "SELECT state, COUNT(*), SUM(attempts > 0) FROM batch_items WHERE batch_id = ? GROUP BY state",
            (batch_id,),
        ) as cur:
            for state, n, attempted in await cur.fetchall():
                counts[str(state)] = int(n)
                counts["attempted"] += int(attempted or 0)
        return counts

    @staticmethod
    def _row(row: Any, counts: dict[str, int]) -> BatchRow:
        return BatchRow(
            id=row[0],
            key_id=row[1],
            origin=row[2],
            status=row[3],
            request_count=int(row[4]),
            created_at=row[5],
            created_ms=int(row[6]),
            expires_ms=int(row[7]),
            ended_at=row[8],
            cancel_initiated_at=row[9],
            counts=counts,
        )

    async def get(self, batch_id: str, key_id: str) -> BatchRow | None:
        async with self.conn.execute(
            f"SELECT {_BATCH_COLUMNS} FROM batches WHERE id = ? AND key_id = ?", (batch_id, key_id)
        ) as cur:
            row = await cur.fetchone()
        if row is None:
            return None
        return self._row(row, await self._counts(batch_id))

    async def list_batches(
        self, key_id: str, limit: int, before_id: str | None, after_id: str | None
    ) -> list[BatchRow]:
        """Newest first, Anthropic-style cursors: `after_id` pages to older, `before_id` to newer."""
        sql = f"SELECT {_BATCH_COLUMNS} FROM batches WHERE key_id = ?"
        args: list[Any] = [key_id]
        if after_id:
            sql += " AND (created_ms, id) < (SELECT created_ms, id FROM batches WHERE id = ?)"
            args.append(after_id)
        if before_id:
            sql += " AND (created_ms, id) > (SELECT created_ms, id FROM batches WHERE id = ?)"
            args.append(before_id)
        sql += " ORDER BY created_ms DESC, id DESC LIMIT ?"
        args.append(limit)
        async with self.conn.execute(sql, args) as cur:
            rows = list(await cur.fetchall())
        return [self._row(r, await self._counts(str(r[0]))) for r in rows]

    async def results(self, batch_id: str) -> list[tuple[str, str, dict[str, Any]]]:
        """(custom_id, request_id, result) of the finished items, in submission order."""
        async with self.conn.execute(
            "SELECT custom_id, request_id, result FROM batch_items WHERE batch_id = ? AND result IS NOT NULL "
            "ORDER BY idx",
            (batch_id,),
        ) as cur:
            return [(str(c), str(r), orjson.loads(res)) for c, r, res in await cur.fetchall()]

    # -- cancel / expire / finalize --------------------------------------------------------------

    async def cancel(self, batch_id: str, key_id: str) -> bool:
        """Queued items become `canceled` now; running ones finish; provider batches are canceled
        upstream by the runner. Returns False when there is no such batch for this key."""
        now = now_ms()
        released: list[ItemHold] = []
        async with self._transaction():
            cur = await self.conn.execute(
                "UPDATE batches SET status = 'canceling', cancel_initiated_at = ? "
                "WHERE id = ? AND key_id = ? AND status = 'in_progress'",
                (iso_of_ms(now), batch_id, key_id),
            )
            changed = cur.rowcount
            if changed:
                await self.conn.execute(
                    "UPDATE batch_items SET state = 'canceled', result = ?, finished_at = ? "
                    "WHERE batch_id = ? AND state = 'queued'",
                    (orjson.dumps({"type": "canceled"}), iso_of_ms(now), batch_id),
                )
                await self.conn.execute(
                    "UPDATE upstream_batches SET cancel_requested = 1, next_poll_ms = 0 WHERE batch_id = ?",
                    (batch_id,),
                )
                await self._mark_unanswered(batch_id, "canceled")
                released = await holds.take_in_state(self.conn, batch_id, "canceled")
        self.on_released(released)
        if changed:
            await self.finalize(batch_id)
            return True
        async with self.conn.execute(
            "SELECT 1 FROM batches WHERE id = ? AND key_id = ?", (batch_id, key_id)
        ) as c:
            return await c.fetchone() is not None

    async def _mark_unanswered(self, batch_id: str, why: str) -> None:
        """Fallback requests that will never run: their /api/v1/status says `failed`, not pending forever."""
        await self.conn.execute(
            "UPDATE responses SET status = 'failed', completed_at = ? WHERE status = 'pending' "
            "AND key_id = (SELECT key_id FROM batches WHERE id = ?) AND request_id IN "
            f"(SELECT request_id FROM batch_items WHERE batch_id = ? AND state = '{why}')",
            (now_iso(), batch_id, batch_id),
        )

    async def expire(self) -> int:
        """Items still queued past their batch's expiry are `expired`."""
        now = now_ms()
        released: list[ItemHold] = []
        async with self._transaction():
            async with self.conn.execute(
                "SELECT DISTINCT i.batch_id FROM batch_items i JOIN batches b ON b.id = i.batch_id "
                "WHERE i.state = 'queued' AND b.expires_ms <= ?",
                (now,),
            ) as cur:
                ids = [str(r[0]) for r in await cur.fetchall()]
            for batch_id in ids:
                await self.conn.execute(
                    "UPDATE batch_items SET state = 'expired', result = ?, finished_at = ? "
                    "WHERE batch_id = ? AND state = 'queued'",
                    (orjson.dumps({"type": "expired"}), iso_of_ms(now), batch_id),
                )
                await self._mark_unanswered(batch_id, "expired")
                released += await holds.take_in_state(self.conn, batch_id, "expired")
        self.on_released(released)
        for batch_id in ids:
            await self.finalize(batch_id)
        return len(ids)

    async def finalize(self, batch_id: str) -> bool:
        """End the batch once no item is pending (idempotent; any worker may call it)."""
        cur = await self.conn.execute(
            "UPDATE batches SET status = 'ended', ended_at = ? WHERE id = ? AND status != 'ended' AND NOT EXISTS "
            "(SELECT 1 FROM batch_items WHERE batch_id = ? AND state IN ('queued', 'running', 'submitted'))",
            (iso_of_ms(now_ms()), batch_id, batch_id),
        )
        return cur.rowcount > 0

    # -- work for the gateway path ---------------------------------------------------------------

    async def claim(self, owner: str, route: str, limit: int, lease_ms: int) -> list[ClaimedItem]:
        """Take up to `limit` runnable items of `route` (queued and due, or running with a dead lease)."""
        now = now_ms()
        # A read first: most passes find nothing, and an UPDATE would take the write lock each time.
        async with self.conn.execute(
            "SELECT 1 FROM batch_items WHERE route = ? AND ((state = 'queued' AND not_before_ms <= ?) "
            "OR (state = 'running' AND lease_until_ms < ?)) LIMIT 1",
            (route, now, now),
        ) as cur:
            if await cur.fetchone() is None:
                return []
        async with self.conn.execute(
            "UPDATE batch_items SET state = 'running', lease_owner = ?, lease_until_ms = ?, attempts = attempts + 1 "
            "WHERE rowid IN (SELECT i.rowid FROM batch_items i JOIN batches b ON b.id = i.batch_id "
            "  WHERE i.route = ? AND b.ready_ms <= ? AND ("
            "    (i.state = 'queued' AND i.not_before_ms <= ?) OR (i.state = 'running' AND i.lease_until_ms < ?))"
            "  ORDER BY b.created_ms, i.idx LIMIT ?) "
            "RETURNING batch_id, idx, custom_id, request_id, model, request",
            (owner, now + lease_ms, route, now, now, now, limit),
        ) as cur:
            rows = list(await cur.fetchall())
        if not rows:
            return []
        keys = await self._keys({str(r[0]) for r in rows})
        return [
            ClaimedItem(str(r[0]), int(r[1]), str(r[2]), str(r[3]), str(r[4]), bytes(r[5]), keys[str(r[0])])
            for r in rows
        ]

    async def _keys(self, batch_ids: set[str]) -> dict[str, str]:
        marks = ",".join("?" * len(batch_ids))
        async with self.conn.execute(
            f"SELECT id, key_id FROM batches WHERE id IN ({marks})", tuple(batch_ids)
        ) as c:
            return {str(a): str(b) for a, b in await c.fetchall()}

    async def finish(self, item: ClaimedItem, owner: str, state: str, result: bytes) -> bool:
        cur = await self.conn.execute(
            "UPDATE batch_items SET state = ?, result = ?, finished_at = ?, lease_owner = NULL "
            "WHERE batch_id = ? AND idx = ? AND lease_owner = ? AND state IN ('running', 'submitted')",
            (state, result, iso_of_ms(now_ms()), item.batch_id, item.idx, owner),
        )
        if cur.rowcount and state in ("canceled", "expired"):
            await self._mark_unanswered(item.batch_id, state)
        if cur.rowcount:
            await self.finalize(item.batch_id)
        return cur.rowcount > 0

    async def requeue(self, item: ClaimedItem, owner: str, not_before_ms: int) -> None:
        """Back to the queue (an upstream 429, a shutdown): tried again after `not_before_ms`."""
        await self.conn.execute(
            "UPDATE batch_items SET state = 'queued', lease_owner = NULL, lease_until_ms = 0, "
            "not_before_ms = ?, upstream_batch = NULL WHERE batch_id = ? AND idx = ? AND lease_owner = ? "
            "AND state IN ('running', 'submitted')",
            (not_before_ms, item.batch_id, item.idx, owner),
        )

    async def canceling(self, batch_id: str) -> bool:
        async with self.conn.execute("SELECT status FROM batches WHERE id = ?", (batch_id,)) as cur:
            row = await cur.fetchone()
        return row is not None and row[0] == "canceling"

    async def release(self, owner: str) -> None:
        """Shutdown: hand this worker's running items back at once instead of waiting out the lease."""
        await self.conn.execute(
            "UPDATE batch_items SET state = 'queued', lease_owner = NULL, lease_until_ms = 0 "
            "WHERE lease_owner = ? AND state = 'running'",
            (owner,),
        )
        await self.conn.execute(
            "UPDATE upstream_batches SET lease_owner = NULL, lease_until_ms = 0 WHERE lease_owner = ?",
            (owner,),
        )

    # -- work for provider batch APIs ------------------------------------------------------------

    async def submitted(
        self,
        upstream_id: str,
        items: list[ClaimedItem],
        owner: str,
        provider: str,
        endpoint_id: str,
        poll_ms: int,
    ) -> None:
        """Items were accepted into the provider batch `upstream_id`: record it for the poller."""
        async with self._transaction():
            await self.conn.execute(
                "INSERT INTO upstream_batches (id, batch_id, provider, endpoint_id, status, next_poll_ms, created_at) "
                "VALUES (?,?,?,?,'in_progress',?,?)",
                (upstream_id, items[0].batch_id, provider, endpoint_id, now_ms() + poll_ms, now_iso()),
            )
            await self.conn.executemany(
                "UPDATE batch_items SET state = 'submitted', upstream_batch = ?, lease_owner = NULL, "
                "lease_until_ms = 0 WHERE batch_id = ? AND idx = ? AND lease_owner = ?",
                [(upstream_id, it.batch_id, it.idx, owner) for it in items],
            )

    async def claim_upstream(
        self, owner: str, limit: int, lease_ms: int
    ) -> list[tuple[str, str, str, str, bool]]:
        """Provider batches due for a poll: (upstream id, batch id, provider, endpoint id, cancel?)."""
        now = now_ms()
        async with self.conn.execute(
            "SELECT 1 FROM upstream_batches WHERE status = 'in_progress' AND next_poll_ms <= ? "
            "AND lease_until_ms < ? LIMIT 1",
            (now, now),
        ) as cur:
            if await cur.fetchone() is None:
                return []
        async with self.conn.execute(
            "UPDATE upstream_batches SET lease_owner = ?, lease_until_ms = ? WHERE id IN ("
            "  SELECT id FROM upstream_batches WHERE status = 'in_progress' AND next_poll_ms <= ? "
            "  AND lease_until_ms < ? ORDER BY next_poll_ms LIMIT ?) "
            "RETURNING id, batch_id, provider, endpoint_id, cancel_requested",
            (owner, now + lease_ms, now, now, limit),
        ) as cur:
            return [(str(a), str(b), str(c), str(d), bool(e)) for a, b, c, d, e in await cur.fetchall()]

    async def upstream_polled(
        self, upstream_id: str, owner: str, next_poll_ms: int, *, cancel_sent: bool
    ) -> None:
        await self.conn.execute(
            "UPDATE upstream_batches SET next_poll_ms = ?, lease_owner = NULL, lease_until_ms = 0"
            + (", cancel_requested = 0" if cancel_sent else "")
            + " WHERE id = ? AND lease_owner = ?",
            (next_poll_ms, upstream_id, owner),
        )

    async def upstream_items(self, upstream_id: str) -> list[ClaimedItem]:
        async with self.conn.execute(
            "SELECT i.batch_id, i.idx, i.custom_id, i.request_id, i.model, i.request, b.key_id FROM batch_items i "
            "JOIN batches b ON b.id = i.batch_id WHERE i.upstream_batch = ? AND i.state = 'submitted'",
            (upstream_id,),
        ) as cur:
            return [
                ClaimedItem(str(a), int(b), str(c), str(d), str(e), bytes(f), str(g))
                for a, b, c, d, e, f, g in await cur.fetchall()
            ]

    async def take_submitted(self, item: ClaimedItem, owner: str) -> None:
        """The poller holds the provider batch's lease; it owns its items while it records results."""
        await self.conn.execute(
            "UPDATE batch_items SET lease_owner = ? WHERE batch_id = ? AND idx = ? AND state = 'submitted'",
            (owner, item.batch_id, item.idx),
        )

    async def upstream_collected(self, upstream_id: str) -> None:
        await self.conn.execute(
            "UPDATE upstream_batches SET status = 'collected', lease_owner = NULL WHERE id = ?",
            (upstream_id,),
        )
