"""Process lifecycle: SIGTERM drains in-flight requests and flushes the request log."""

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


def test_sigterm_finishes_in_flight_requests_and_flushes_the_log(tmp_path: Path) -> None:
    slow = {**MOCK_PROVIDER, "mock": {"latency": "1500ms", "chunks": 4, "chunk_gap": "200ms"}}
    server = Ensemble(tmp_path, providers=[slow])
    results: dict[str, httpx.Response] = {}

    def call(path: str) -> None:
        results[path] = httpx.post(
            server.url + path,
            json={"model": "mock-1", "messages": [{"role": "user", "content": "hi"}]},
            headers={
                "authorization": f"Bearer {server.key}",
                "x-request-id": f"req-life{path.replace('/', '-')}",
            },
            timeout=30,
        )

    def in_flight(path: str) -> bool:
        with server.client() as c:
            r = c.get(f"/api/v1/status/req-life{path.replace('/', '-')}")
        return r.status_code == 200 and r.json()["status"] in ("pending", "streaming")

    threads = [threading.Thread(target=call, args=(p,)) for p in ("/api/v1/generate", "/api/v1/stream")]
    for t in threads:
        t.start()
    wait_until(
        lambda: all(in_flight(p) for p in ("/api/v1/generate", "/api/v1/stream")), what="both in flight"
    )
    server.process.signal(signal.SIGTERM)
    assert server.process.proc.wait(30) == 0
    for t in threads:
        t.join()
    assert results["/api/v1/generate"].status_code == 200
    assert results["/api/v1/generate"].json()["content"].startswith("This is a mock answer")
    assert results["/api/v1/stream"].status_code == 200
    assert "event: done" in results["/api/v1/stream"].text
    with sqlite3.connect(tmp_path / "data" / "ensemble.db") as db:
        (logged,) = db.execute("SELECT count(*) FROM request_log WHERE status = 'success'").fetchone()
        (requests,) = db.execute("SELECT sum(requests) FROM usage_daily").fetchone()
    assert logged == 2 and requests == 2


def test_workers_flag_serves_from_several_processes(tmp_path: Path) -> None:
    server = Ensemble(tmp_path, workers=2)
    try:
        with server.client() as c:
            for _ in range(20):
                r = c.post(
                    "/api/v1/generate",
                    json={"model": "mock-1", "messages": [{"role": "user", "content": "x"}]},
                )
                assert r.status_code == 200
        assert server.process.output().count("ready") >= 2
    finally:
        assert server.stop() == 0
