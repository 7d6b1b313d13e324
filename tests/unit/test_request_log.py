"""The request log's ring buffer: never blocks, and when full drops the oldest record, counted."""

from __future__ import annotations

import logging

import aiosqlite
import pytest

from ensemble.storage import database
from ensemble.usage.request_log import LogRecord, RequestLog


def record(i: int, error: str = "") -> LogRecord:
    return LogRecord(
        request_id=f"req_{i}",
        key_id="key_1",
        model="m",
        provider="p",
        endpoint_id="e",
        status="error" if error else "success",
        http_status=502 if error else 200,
        input_tokens=10,
        output_tokens=i,
        cached_tokens=0,
        cache_creation_tokens=0,
        reasoning_tokens=0,
        cost_micro_dollars=i,
        latency_ms=1.0,
        error=error,
        created_at="2025-01-01T00:00:00.000Z",
    )


async def test_a_full_buffer_drops_the_oldest_counts_it_and_says_so(
    tmp_path: object, caplog: pytest.LogCaptureFixture
) -> None:
    path = f"{tmp_path}/log.db"
    sync = database.connect_sync(path)
    database.migrate(sync)
    sync.close()
    conn = await aiosqlite.connect(path, isolation_level=None)
    try:
        log = RequestLog(conn, capacity=16)  # writer not started: nothing drains
        with caplog.at_level(logging.WARNING, logger="ensemble.usage"):
            for i in range(20):
                log.record(record(i))
        assert len(log) == 16 and log.dropped == 4
        assert log.stats()["dropped"] == 4 and log.stats()["buffered"] == 16
        assert "request log buffer full" in caplog.text
        await log.flush()
        assert log.written == 16 and log.stats()["buffered"] == 0
        async with conn.execute("SELECT request_id FROM request_log ORDER BY seq") as cur:
            kept = [r[0] for r in await cur.fetchall()]
        assert kept == [f"req_{i}" for i in range(4, 20)]  # the four oldest were dropped
        async with conn.execute("SELECT sum(requests), sum(output_tokens) FROM usage_daily") as cur:
            assert await cur.fetchone() == (16, sum(range(4, 20)))
    finally:
        await conn.close()


async def test_error_messages_are_redacted_before_they_are_buffered(tmp_path: object) -> None:
    conn = await aiosqlite.connect(":memory:")
    try:
        log = RequestLog(conn)
        log.record(record(1, error="Incorrect API key provided: sk-proj-abcdefghijklmnopqrstuvwx"))
        assert "abcdefghijklmnop" not in log._buffer[0].error
    finally:
        await conn.close()
