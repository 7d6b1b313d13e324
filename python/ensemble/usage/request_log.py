"""The request log and per-key usage: fed through a bounded ring buffer, written to SQLite in batches.

Requests never wait for the disk. A background task drains the buffer every `flush_interval` (or
sooner when it fills past a batch) and writes the log rows and the usage upserts in one transaction,
so the log and the usage table always agree. When the buffer is full the *oldest unwritten* record
is dropped and counted (`dropped`), because blocking requests on a slow disk would be worse; the
count is visible in /admin/status and the metrics. SIGTERM flushes everything that is buffered.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable

import aiosqlite
import msgspec

from ensemble.logs import redact
from ensemble.usage.journal import WORKER_DIED, InFlightJournal, Orphan

log = logging.getLogger("ensemble.usage")

DEFAULT_CAPACITY = 65_536
MAX_TRANSACTION_ROWS = 4096


class LogRecord(msgspec.Struct):
    request_id: str
    key_id: str
    model: str
    provider: str
    endpoint_id: str
    status: str  # success | error
    http_status: int
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    cache_creation_tokens: int
    reasoning_tokens: int
    cost_micro_dollars: int
    latency_ms: float
    error: str
    created_at: str  # ISO-8601 UTC
    response_body: bytes | None = None  # the InferenceResponse JSON, kept for /api/v1/retrieve
    # The routing decision (router.RouteDecision); '' when the request never reached routing.
    route_reason: str = ""
    cache_value_usd: float = 0.0
    cost_penalty_usd: float = 0.0
    # What the ingress keeps to continue the conversation (Responses previous_response_id), or None.
    conversation: bytes | None = None


_INSERT_LOG = """
INSERT INTO request_log (request_id, key_id, model, provider, endpoint_id, status, http_status,
    input_tokens, output_tokens, cached_tokens, cache_creation_tokens, reasoning_tokens,
    cost_micro_dollars, latency_ms, error, created_at, route_reason, cache_value_usd, cost_penalty_usd)
VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)
"""

_STORE_RESPONSE = """
INSERT INTO responses (request_id, key_id, status, model, provider, created_at, completed_at, body,
    conversation)
VALUES (?,?,?,?,?,?,?,?,?)
ON CONFLICT (key_id, request_id) DO UPDATE SET
    status = excluded.status, completed_at = excluded.completed_at, body = excluded.body,
    conversation = excluded.conversation
"""

_UPSERT_USAGE = """
INSERT INTO usage_daily (key_id, day, model, requests, errors, input_tokens, output_tokens,
    cached_tokens, cache_creation_tokens, reasoning_tokens, cost_micro_dollars)
VALUES (?,?,?,?,?,?,?,?,?,?,?)
ON CONFLICT (key_id, day, model) DO UPDATE SET
    requests = requests + excluded.requests,
    errors = errors + excluded.errors,
    input_tokens = input_tokens + excluded.input_tokens,
    output_tokens = output_tokens + excluded.output_tokens,
    cached_tokens = cached_tokens + excluded.cached_tokens,
    cache_creation_tokens = cache_creation_tokens + excluded.cache_creation_tokens,
    reasoning_tokens = reasoning_tokens + excluded.reasoning_tokens,
    cost_micro_dollars = cost_micro_dollars + excluded.cost_micro_dollars
"""


class RequestLog:
    def __init__(
        self,
        conn: aiosqlite.Connection,
        *,
        capacity: int = DEFAULT_CAPACITY,
        batch_size: int = 64,
        flush_interval: float = 0.2,
        keep_rows: bool = True,
    ) -> None:
        self._conn = conn
        self._keep_rows = keep_rows  # logging.request_log: false keeps usage totals but no per-request rows
        self._buffer: collections.deque[LogRecord] = collections.deque()
        self._capacity = capacity
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._flush_lock = asyncio.Lock()  # one transaction at a time on the shared connection
        self.dropped = 0
        self.written = 0
        # Called with every record as it is queued (S3 persistence); must not block.
        self.observers: list[Callable[[LogRecord], None]] = []
        self.journal: InFlightJournal | None = None  # records not yet written survive a killed worker

    def __len__(self) -> int:
        return len(self._buffer)

    def stats(self) -> dict[str, object]:
        """What /admin/status shows: how full the buffer is and what was lost, if anything."""
        return {
            "buffered": len(self._buffer),
            "capacity": self._capacity,
            "dropped": self.dropped,
            "written": self.written,
            "batch_size": self._batch_size,
            "flush_interval_ms": round(self._flush_interval * 1000),
            "when_full": "drop_oldest",
        }

    def record(self, rec: LogRecord) -> None:
        """Non-blocking: enqueue, dropping the oldest unwritten record if the buffer is full."""
        if rec.status == "error":
            # A served model's name is config; an unknown one is client input, and a key pasted into
            # "model" must not be stored. Upstream messages may echo a credential back.
            rec.model = redact(rec.model)
            rec.error = redact(rec.error)
            log.log(
                logging.INFO if rec.http_status >= 500 else logging.DEBUG,  # 4xx storms stay quiet
                "request %s failed with HTTP %d: %s",
                rec.request_id,
                rec.http_status,
                rec.error,
                extra={"request_id": rec.request_id, "key_id": rec.key_id, "model": rec.model},
            )
        if len(self._buffer) >= self._capacity:
            self._buffer.popleft()
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("request log buffer full: %d records dropped so far", self.dropped)
        self._buffer.append(rec)
        if self.journal is not None:
            self.journal.recorded(
                rec.request_id,
                msgspec.json.encode(msgspec.structs.replace(rec, response_body=None, conversation=None)),
            )
        for observe in self.observers:
            observe(rec)
        if len(self._buffer) >= self._batch_size:
            self._wake.set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="request-log-writer")

    async def _run(self) -> None:
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._flush_interval)
            self._wake.clear()
            try:
                await self.flush()
            except Exception:  # keep the writer alive; the records stay buffered for the next try
                log.exception("request log flush failed; will retry")
                await asyncio.sleep(1.0)

    async def flush(self) -> None:
        async with self._flush_lock:
            await self._flush()

    async def _flush(self) -> None:
        while self._buffer:
            # Everything buffered goes in one transaction (up to MAX_TRANSACTION_ROWS): each costs
            # a handful of round trips to the writer thread, which under load waits for the GIL, so
            # a backlog must be written in big transactions to keep up. The writer wakes at
            # `batch_size` rows, which keeps transactions small when the load is light: a big one
            # (400 rows, ~4 ms) delays the requests that overlap it on the worker's core.
            take = min(len(self._buffer), MAX_TRANSACTION_ROWS)
            batch = [self._buffer.popleft() for _ in range(take)]
            try:
                await self._write(batch)
            except BaseException:
                self._buffer.extendleft(reversed(batch))
                raise
            self.written += len(batch)
            if self.journal is not None:
                self.journal.written(r.request_id for r in batch)

    async def recover(self, orphans: list[Orphan]) -> int:
        """Write what dead workers' journals left open: their records, or a failed record for a
        request that never got one. Returns how many records were written."""
        ids = [o.request_id for o in orphans]
        present: set[str] = set()
        for i in range(0, len(ids), 500):  # a record that reached SQLite just before the kill
            chunk = ids[i : i + 500]
            async with self._conn.execute(
                f"SELECT request_id FROM request_log WHERE request_id IN ({','.join('?' * len(chunk))})",
                chunk,
            ) as cur:
                present.update(str(r[0]) for r in await cur.fetchall())
        records = [self._orphan_record(o) for o in orphans if o.request_id not in present]
        async with self._flush_lock:
            await self._write(records)
        self.written += len(records)
        return len(records)

    @staticmethod
    def _orphan_record(o: Orphan) -> LogRecord:
        if o.record is not None:
            with contextlib.suppress(msgspec.DecodeError):
                return msgspec.json.decode(o.record, type=LogRecord)
        return LogRecord(
            request_id=o.request_id,
            key_id=o.key_id,
            model=redact(o.model),
            provider="",
            endpoint_id="",
            status="error",
            http_status=500,
            input_tokens=0,
            output_tokens=0,
            cached_tokens=0,
            cache_creation_tokens=0,
            reasoning_tokens=0,
            cost_micro_dollars=0,
            latency_ms=0.0,
            error=WORKER_DIED,
            created_at=o.created_at,
        )

    async def _write(self, batch: list[LogRecord]) -> None:
        logs = [
            (
                r.request_id,
                r.key_id,
                r.model,
                r.provider,
                r.endpoint_id,
                r.status,
                r.http_status,
                r.input_tokens,
                r.output_tokens,
                r.cached_tokens,
                r.cache_creation_tokens,
                r.reasoning_tokens,
                r.cost_micro_dollars,
                r.latency_ms,
                r.error,
                r.created_at,
                r.route_reason,
                r.cache_value_usd,
                r.cost_penalty_usd,
            )
            for r in batch
        ]
        # One upsert per (key, day, model) and batch, not per request: the rows of a batch mostly
        # share a few keys, and each upsert is a B-tree update under the write lock.
        totals: dict[tuple[str, str, str], list[int]] = {}
        for r in batch:
            t = totals.get((r.key_id, r.created_at[:10], r.model))
            if t is None:
                t = totals[(r.key_id, r.created_at[:10], r.model)] = [0] * 8
            t[0] += 1
            t[1] += r.status == "error"
            t[2] += r.input_tokens
            t[3] += r.output_tokens
            t[4] += r.cached_tokens
            t[5] += r.cache_creation_tokens
            t[6] += r.reasoning_tokens
            t[7] += r.cost_micro_dollars
        usage = [(*group, *sums) for group, sums in totals.items()]
        responses = [
            (
                r.request_id,
                r.key_id,
                "completed" if r.status == "success" else "failed",
                r.model,
                r.provider,
                r.created_at,
                r.created_at,
                r.response_body,
                r.conversation,
            )
            for r in batch
        ]
        await self._conn.execute("BEGIN IMMEDIATE")
        try:
            if self._keep_rows:
                await self._conn.executemany(_INSERT_LOG, logs)
            await self._conn.executemany(_UPSERT_USAGE, usage)
            await self._conn.executemany(_STORE_RESPONSE, responses)
            await self._conn.execute("COMMIT")
        except BaseException:
            await self._conn.execute("ROLLBACK")
            raise

    async def close(self) -> None:
        """Stop the writer and flush whatever is buffered (SIGTERM path)."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
        await self.flush()
