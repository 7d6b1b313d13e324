"""A worker killed under load (SIGKILL) is replaced, the server keeps serving, and the requests it
was answering are recorded as failed in the request log (usage/journal.py)."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
from pathlib import Path

import httpx
import pytest

from ensemble.usage.journal import WORKER_DIED
from support.ensemble import MOCK_PROVIDER, Ensemble
from support.processes import worker_pids
from support.waiting import wait_until

pytestmark = pytest.mark.integration

BODY = {"model": "mock-1", "messages": [{"role": "user", "content": "under load"}]}


def workers(server: Ensemble) -> set[int]:
    return worker_pids(server.process)


def log_rows(server: Ensemble) -> dict[str, tuple[str, int, str]]:
    with sqlite3.connect(server.dir / "data" / "ensemble.db") as db:
        return {
            rid: (status, http, error)
            for rid, status, http, error in db.execute(
                "SELECT request_id, status, http_status, error FROM request_log"
            ).fetchall()
        }


def test_a_killed_worker_is_replaced_and_its_requests_recorded_failed(tmp_path: Path) -> None:
    slow = {**MOCK_PROVIDER, "mock": {"latency": "300ms", "chunks": 4, "chunk_gap": "100ms"}}
    server = Ensemble(tmp_path, providers=[slow], workers=2)
    outcomes: dict[str, str] = {}  # request id -> answered | broken
    lock = threading.Lock()
    stop = threading.Event()

    def load(n: int) -> None:
        with httpx.Client(
            base_url=server.url, headers={"authorization": f"Bearer {server.key}"}, timeout=30
        ) as c:
            i = 0
            while not stop.is_set():
                rid = f"wd-{n}-{i}"
                i += 1
                try:
                    r = c.post("/api/v1/stream", json=BODY, headers={"x-request-id": rid})
                    ok = r.status_code == 200 and "event: done" in r.text
                except httpx.TransportError:
                    ok = False
                with lock:
                    outcomes[rid] = "answered" if ok else "broken"

    try:
        wait_until(lambda: len(workers(server)) == 2, what="two workers")
        before = workers(server)
        threads = [threading.Thread(target=load, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        wait_until(lambda: len(outcomes) > 16, timeout=30, what="the load is flowing")
        victim = min(before)
        os.kill(victim, signal.SIGKILL)
        wait_until(
            lambda: len(workers(server)) == 2 and victim not in workers(server),
            timeout=20,
            what="a replacement worker",
        )
        count = len(outcomes)
        wait_until(lambda: len(outcomes) > count + 16, timeout=30, what="traffic after the replacement")
        stop.set()
        for t in threads:
            t.join(30)
        assert server.process.proc.poll() is None  # the server is still up
        with server.client() as c:
            assert c.post("/api/v1/generate", json=BODY).status_code == 200
        broken = {rid for rid, o in outcomes.items() if o == "broken"}
        assert broken, "the kill should have cut some requests in flight"

        answered = {rid for rid, o in outcomes.items() if o == "answered"}
        wait_until(
            lambda: answered <= set(log_rows(server)), timeout=10, what="every answered request logged"
        )
        rows = log_rows(server)
        for rid in answered:
            assert rows[rid][0] == "success", (rid, rows[rid])
        died = {rid for rid in broken if rid in rows}
        for rid in died:
            assert rows[rid] == ("error", 500, WORKER_DIED), (rid, rows[rid])
        # Most cut requests were in the gateway (journaled); one still being read or authenticated
        # at the kill has no record (docs/accounting.md).
        assert died, "no in-flight request of the killed worker was recorded as failed"
        output = server.process.output()
        assert "recovered" in output and "was never retrieved" not in output
    finally:
        stop.set()
        server.stop()
