"""Accounting is exact: after a mixed run, usage table, request log and the responses agree.

K requests against the fake upstream: plain and streamed successes (native and OpenAI format), upstream
5xx and 4xx, connection resets, streams that break mid-way and streams the client abandons (finished
in the background under `on_client_disconnect: complete`, then retrieved). Every request must appear
exactly once; token counts and micro-dollars must match to the unit in all three places.
"""

from __future__ import annotations

import secrets
import sqlite3
import time
from collections.abc import Iterator
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from support.ensemble import Ensemble, openai_provider
from support.fake import FakeUpstream

pytestmark = pytest.mark.integration

ADMIN = "adm_" + secrets.token_urlsafe(24)
TOKEN_FIELDS = ("input_tokens", "output_tokens", "cached_tokens", "cache_creation_tokens", "reasoning_tokens")
PRICES = {"input": Decimal("2.5"), "output": Decimal("10"), "cache_read": Decimal("1.25")}  # USD / 1M


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Ensemble, FakeUpstream]]:
    fake = FakeUpstream()
    # No cool-down after upstream 5xx: each failure below must reach the upstream, not a paused pool.
    provider = openai_provider(fake.endpoint_url("acct"), models=["gpt-4o"], cooldown_after_failures=0)
    server = Ensemble(
        Path(tmp_path_factory.mktemp("accounting")),
        providers=[provider],
        env={"ENSEMBLE_ADMIN_KEY": ADMIN},
        config={"server": {"on_client_disconnect": "complete"}},
    )
    fake.configure("acct", chunks=6, chunk_gap_ms=15, cached_tokens=3, reasoning_tokens=2)
    yield server, fake
    server.stop()
    fake.stop()


def sse_done(text: str) -> dict[str, Any]:
    for frame in text.split("\n\n"):
        if frame.startswith("event: done"):
            data: dict[str, Any] = orjson.loads(frame.split("data: ", 1)[1])
            return data
    raise AssertionError(f"no done event in {text[:500]}")


def expected_micro(row: dict[str, int]) -> int:
    uncached = row["input_tokens"] - row["cached_tokens"] - row["cache_creation_tokens"]
    cost = (
        uncached * PRICES["input"]
        + row["cached_tokens"] * PRICES["cache_read"]
        + row["output_tokens"] * PRICES["output"]
    )
    return int(cost.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))  # $/1M tokens = micro-dollars per token


def test_usage_log_and_responses_agree_to_the_token_and_micro_dollar(
    run: tuple[Ensemble, FakeUpstream], request: pytest.FixtureRequest
) -> None:
    server, fake = run
    client = server.client()
    request.addfinalizer(client.close)
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "count me exactly, please"}]}
    responses: dict[str, dict[str, Any] | None] = {}  # request id -> the InferenceResponse the client got
    expect_error: set[str] = set()
    abandoned: list[str] = []

    def rid(r: httpx.Response) -> str:
        request_id = r.headers["x-request-id"]
        assert request_id not in responses
        return request_id

    for _ in range(8):  # plain success
        r = client.post("/api/v1/generate", json=body)
        assert r.status_code == 200, r.text
        responses[rid(r)] = r.json()
    for _ in range(6):  # streamed success
        r = client.post("/api/v1/stream", json=body)
        assert r.status_code == 200
        responses[rid(r)] = sse_done(r.text)
    for _ in range(4):  # OpenAI-format stream: its usage is fetched back via retrieve
        r = client.post(
            "/v1/chat/completions", json={**body, "stream": True, "stream_options": {"include_usage": True}}
        )
        assert r.status_code == 200 and "[DONE]" in r.text
        responses[rid(r)] = None
    for behaviour, code in (
        ({"status": 500}, 502),
        ({"status": 503}, 502),
        ({"status": 400, "message": "bad"}, 400),
        ({"status": 504}, 502),
        ({"status": 500}, 502),
        ({"status": 422}, 422),
    ):
        fake.enqueue("acct", behaviour)
        r = client.post("/api/v1/generate", json=body)
        assert r.status_code == code, (behaviour, r.text)
        expect_error.add(rid(r))
        responses[r.headers["x-request-id"]] = None
    # Every failure above reached the upstream (none was answered from a cool-down).
    assert sum(1 for q in fake.requests("acct") if q["status"] and q["status"] >= 400) == 6
    for broken in (  # streams that break after they started
        {"error_event_after_chunks": 2},
        {"error_event_after_chunks": 4},
        {"reset_after_chunks": 3},
        {"malformed_after_chunks": 3},
    ):
        fake.enqueue("acct", broken)
        r = client.post("/api/v1/stream", json=body)
        assert r.status_code == 200 and "event: error" in r.text
        expect_error.add(rid(r))
        responses[r.headers["x-request-id"]] = None
    for _ in range(4):  # the client walks away after the first block
        auth = {"authorization": f"Bearer {server.key}"}
        with (
            httpx.Client(base_url=server.url, headers=auth) as c,
            c.stream("POST", "/api/v1/stream", json=body) as r,
        ):
            assert r.status_code == 200
            request_id = rid(r)
            for line in r.iter_lines():
                if line.startswith("event: block"):
                    break
        abandoned.append(request_id)
        responses[request_id] = None
    client.close()
    k = len(responses)
    assert k == 32

    admin = httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {ADMIN}"}, timeout=30)
    request.addfinalizer(admin.close)
    deadline = time.monotonic() + 20
    while admin.get("/admin/logs", params={"limit": 1}).json()["total"] < k:  # abandoned ones finish late
        assert time.monotonic() < deadline
        time.sleep(0.1)
    time.sleep(0.3)  # a fixed wait on purpose: nothing more may arrive in it
    assert admin.get("/admin/logs", params={"limit": 1}).json()["total"] == k  # and nothing more

    # Fill in what the client did not see in full: stored answers, via the client API.
    with server.client() as c:
        for request_id, seen in responses.items():
            if seen is None and request_id not in expect_error:
                r = c.get(f"/api/v1/retrieve/{request_id}")
                assert r.status_code == 200, (request_id, r.text)
                responses[request_id] = r.json()
            elif request_id in expect_error:
                assert c.get(f"/api/v1/status/{request_id}").json()["status"] == "failed"

    db = sqlite3.connect(server.dir / "data" / "ensemble.db")
    db.row_factory = sqlite3.Row
    rows = {r["request_id"]: dict(r) for r in db.execute("SELECT * FROM request_log")}
    (logged,) = db.execute("SELECT count(*) FROM request_log").fetchone()
    assert logged == len(rows) == k and set(rows) == set(responses)  # each request exactly once

    # 1. Request log vs client responses, request by request.
    for request_id, row in rows.items():
        assert row["cost_micro_dollars"] == expected_micro(row), row
        if request_id in expect_error:
            assert row["status"] == "error" and row["http_status"] >= 400
            continue
        resp = responses[request_id]
        assert resp is not None and row["status"] == "success" and row["http_status"] == 200
        assert resp["input_tokens"] == row["input_tokens"] and resp["output_tokens"] == row["output_tokens"]
        assert resp["cached_prompt_tokens"] == row["cached_tokens"] == 3
        assert resp["reasoning_tokens"] == row["reasoning_tokens"] == 2
        assert resp["cache_creation_tokens"] == row["cache_creation_tokens"]
        assert resp["cost_micro_dollars"] == row["cost_micro_dollars"]
    assert {rows[a]["status"] for a in abandoned} == {"success"}
    broken = [rows[i] for i in expect_error if rows[i]["http_status"] != 200 and rows[i]["output_tokens"]]
    assert len(broken) == 4  # streams that broke mid-way keep (and bill) what was streamed
    assert all(row["cost_micro_dollars"] > 0 for row in rows.values() if row["status"] == "success")

    # 2. Usage table vs request log, in total.
    sums = ", ".join(f"sum({f})" for f in (*TOKEN_FIELDS, "cost_micro_dollars"))
    log_totals = db.execute(f"SELECT count(*), sum(status = 'error'), {sums} FROM request_log").fetchone()
    usage_totals = db.execute(f"SELECT sum(requests), sum(errors), {sums} FROM usage_daily").fetchone()
    assert tuple(log_totals) == tuple(usage_totals)
    assert log_totals[0] == k and log_totals[1] == len(expect_error)
    db.close()

    # 3. Responses vs the admin usage API (which reads the usage table).
    usage = admin.get(f"/admin/keys/{server_key_id(admin)}/usage").json()["totals"]
    ok = [r for i, r in responses.items() if i not in expect_error and r is not None]
    errors = [rows[i] for i in expect_error]
    assert usage["requests"] == k and usage["errors"] == len(expect_error)
    assert usage["input_tokens"] == sum(r["input_tokens"] for r in ok) + sum(
        e["input_tokens"] for e in errors
    )
    assert usage["output_tokens"] == sum(r["output_tokens"] for r in ok) + sum(
        e["output_tokens"] for e in errors
    )
    assert usage["cached_tokens"] == sum(r["cached_prompt_tokens"] for r in ok) + sum(
        e["cached_tokens"] for e in errors
    )
    assert usage["reasoning_tokens"] == sum(r["reasoning_tokens"] for r in ok) + sum(
        e["reasoning_tokens"] for e in errors
    )
    micro = sum(r["cost_micro_dollars"] for r in ok) + sum(e["cost_micro_dollars"] for e in errors)
    assert usage["cost_micro_dollars"] == micro
    assert Decimal(usage["cost"]) == Decimal(micro) / 1_000_000
    # The successes alone, as the clients saw them, add up to the success rows.
    assert sum(r["cost_micro_dollars"] for r in ok) == sum(
        row["cost_micro_dollars"] for i, row in rows.items() if i not in expect_error
    )
    # And the admin log view says the same as the table.
    entries = admin.get("/admin/logs", params={"limit": 1000}).json()["logs"]
    assert {
        e["request_id"]: (e["input_tokens"], e["output_tokens"], e["cost_micro_dollars"]) for e in entries
    } == {i: (r["input_tokens"], r["output_tokens"], r["cost_micro_dollars"]) for i, r in rows.items()}
    admin.close()


def server_key_id(admin: httpx.Client) -> str:
    keys = admin.get("/admin/keys").json()["keys"]
    (key,) = [k for k in keys if k["name"] == "test"]
    key_id: str = key["key_id"]
    return key_id


def test_cancelled_streams_are_counted_once_with_what_was_streamed(tmp_path: Path) -> None:
    """`on_client_disconnect: cancel`: the upstream call stops, and the partial answer is billed once."""
    fake = FakeUpstream()
    server = Ensemble(
        tmp_path,
        providers=[openai_provider(fake.endpoint_url("cancel"), models=["gpt-4o"])],
        config={"server": {"on_client_disconnect": "cancel"}},
    )
    try:
        fake.configure("cancel", chunks=40, chunk_gap_ms=25)
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "a long answer, please"}]}
        ids = []
        auth = {"authorization": f"Bearer {server.key}"}
        for _ in range(3):
            with (
                httpx.Client(base_url=server.url, headers=auth) as c,
                c.stream("POST", "/api/v1/stream", json=body) as r,
            ):
                ids.append(r.headers["x-request-id"])
                blocks = 0
                for line in r.iter_lines():
                    blocks += line.startswith("event: block")
                    if blocks == 3:
                        break
        with server.client() as c:
            r = c.post("/api/v1/generate", json=body)
            assert r.status_code == 200
            done = r.json()
        deadline = time.monotonic() + 10
        db_path = server.dir / "data" / "ensemble.db"
        while True:
            with sqlite3.connect(db_path) as db:
                db.row_factory = sqlite3.Row
                rows = {r["request_id"]: dict(r) for r in db.execute("SELECT * FROM request_log")}
                sums = ", ".join(f"sum({f})" for f in (*TOKEN_FIELDS, "cost_micro_dollars"))
                log_totals = db.execute(
                    f"SELECT count(*), sum(status = 'error'), {sums} FROM request_log"
                ).fetchone()
                usage_totals = db.execute(
                    f"SELECT sum(requests), sum(errors), {sums} FROM usage_daily"
                ).fetchone()
            if len(rows) == 4 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert set(rows) == {*ids, done["id"]}
        assert tuple(log_totals) == tuple(usage_totals) and log_totals[1] == 3
        for request_id in ids:
            row = rows[request_id]
            assert row["status"] == "error" and row["http_status"] == 499
            assert (
                0 < row["output_tokens"] < 40
            )  # what reached the client before it left, not the whole answer
            assert row["cost_micro_dollars"] == expected_micro(row)
        assert rows[done["id"]]["cost_micro_dollars"] == done["cost_micro_dollars"]
        # The upstream calls were cut short, not left running.
        cancelled = [r for r in fake.requests("cancel") if r["stream"]]
        assert len(cancelled) == 3 and all(r["client_disconnected"] for r in cancelled)
    finally:
        server.stop()
        fake.stop()
