"""Crash safety of the request log: SIGTERM under load loses nothing; SIGKILL loses no
record of an answered request (the crash journal, usage/journal.py)."""

from __future__ import annotations

import signal
import sqlite3
import threading
from pathlib import Path

import httpx
import pytest

from support.ensemble import MOCK_PROVIDER, Ensemble
from support.waiting import wait_until

pytestmark = pytest.mark.integration

BODY = {"model": "mock-1", "messages": [{"role": "user", "content": "under load"}]}


def rows(server: Ensemble) -> tuple[dict[str, int], int]:
    with sqlite3.connect(server.dir / "data" / "ensemble.db") as db:
        counts = dict(
            db.execute("SELECT request_id, count(*) FROM request_log GROUP BY request_id").fetchall()
        )
        (usage,) = db.execute("SELECT coalesce(sum(requests), 0) FROM usage_daily").fetchone()
    return counts, int(usage)


def test_sigterm_under_load_loses_no_accepted_request(tmp_path: Path) -> None:
    slow = {**MOCK_PROVIDER, "mock": {"latency": "150ms", "chunks": 4, "chunk_gap": "50ms"}}
    server = Ensemble(tmp_path, providers=[slow], workers=2)
    answered: list[tuple[str, int]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def load(path: str) -> None:
        with httpx.Client(
            base_url=server.url, headers={"authorization": f"Bearer {server.key}"}, timeout=30
        ) as c:
            while not stop.is_set():
                try:
                    r = c.post(path, json=BODY)
                    if path == "/api/v1/stream":
                        assert "event: done" in r.text
                except (httpx.TransportError, AssertionError):
                    return  # the server stopped accepting, or went away mid-answer: not answered
                with lock:
                    answered.append((r.headers["x-request-id"], r.status_code))

    threads = [threading.Thread(target=load, args=(p,)) for p in ["/api/v1/generate", "/api/v1/stream"] * 4]
    for t in threads:
        t.start()
    wait_until(lambda: len(answered) > 10, timeout=30, what="the load is flowing")
    in_flight_before = len(answered)
    server.process.signal(signal.SIGTERM)
    assert server.process.proc.wait(30) == 0
    stop.set()
    for t in threads:
        t.join(30)
    assert in_flight_before > 10 and len(answered) >= in_flight_before
    assert {status for _, status in answered} == {200}
    counts, usage = rows(server)
    missing = [rid for rid, _ in answered if counts.get(rid) != 1]
    assert not missing, f"{len(missing)} answered requests without exactly one log record"
    # Every record is counted once in usage, and nothing was recorded that no client accepted twice.
    assert usage == sum(counts.values()) and max(counts.values()) == 1
    assert sum(counts.values()) - len(answered) <= len(threads)  # at most one unanswered per connection
    assert "records written, 0 dropped" in server.process.output()


def test_sigkill_loses_no_answered_request(tmp_path: Path) -> None:
    """The durability window (README, docs/operations.md): a killed process loses no record it
    had, even one younger than the flush interval: the crash journal carries it to the next start."""
    server = Ensemble(tmp_path)
    ids = []
    with server.client() as c:
        for _ in range(20):
            r = c.post("/api/v1/generate", json=BODY)
            assert r.status_code == 200
            ids.append(r.headers["x-request-id"])
    server.process.signal(signal.SIGKILL)  # at once: the last records are not flushed yet
    server.process.proc.wait(10)
    restarted = Ensemble(tmp_path)
    try:
        wait_until(lambda: all(rows(restarted)[0].get(rid) == 1 for rid in ids), what="the records")
        counts, usage = rows(restarted)
        assert usage == sum(counts.values()) and max(counts.values()) == 1
        assert "recovered" in restarted.process.output() or all(counts.get(r) == 1 for r in ids)
    finally:
        restarted.stop()
