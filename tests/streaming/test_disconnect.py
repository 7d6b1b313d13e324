"""Client disconnects on every route, measured at the fake upstream.

`cancel`: the upstream connection is closed within 100 ms of the client's close — while tokens
flow, while the upstream is silent mid-answer, and before its first byte. `complete`: the answer is
finished, priced and stored, and `/api/v1/retrieve` returns it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.ensemble import Ensemble
from support.fake import FakeUpstream
from support.waiting import wait_until

from .conftest import HELLO, fake_record, log_row, make_server, solo_providers
from .rawhttp import RawRequest

pytestmark = pytest.mark.integration

CANCEL_WITHIN = 0.100  # seconds

ROUTES = {
    "native": ("/api/v1/stream", {"stream": True}, b"event: block"),
    "text": ("/api/v1/generate/stream", {}, b"\r\n"),
    "openai": ("/v1/chat/completions", {"stream": True}, b"data: "),
    # With the usage chunk: the same-format fast path (the provider's bytes pass through).
    "passthrough": (
        "/v1/chat/completions",
        {"stream": True, "stream_options": {"include_usage": True}},
        b"data: ",
    ),
}
NAMES = [f"{r}-{w}" for r in ROUTES for w in ("flow", "silent", "first")] + ["whole", "status"]


@pytest.fixture(scope="module")
def cancel_server(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ensemble]:
    s = make_server(
        Path(tmp_path_factory.mktemp("cancel")),
        solo_providers(fake, [f"c-{n}" for n in NAMES]),
        on_client_disconnect="cancel",
    )
    yield s
    s.stop()


@pytest.fixture(scope="module")
def complete_server(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ensemble]:
    s = make_server(
        Path(tmp_path_factory.mktemp("complete")),
        solo_providers(fake, ["k-flow", "k-silent", "k-first", "k-status"]),
        on_client_disconnect="complete",
    )
    yield s
    s.stop()


def start(server: Ensemble, route: str, model: str, rid: str) -> RawRequest:
    path, extra, _ = ROUTES[route]
    return RawRequest(server.url, path, server.key, {"model": model, "messages": HELLO, **extra}, rid)


def upstream_closed_after(fake: FakeUpstream, endpoint: str, closed_at: float) -> float:
    def closed() -> dict[str, Any] | None:
        rec = fake_record(fake, endpoint)
        return rec if rec["disconnected_at"] else None

    rec = wait_until(closed, timeout=5)
    return float(rec["disconnected_at"]) - closed_at


SETUPS: dict[str, dict[str, Any]] = {
    "flow": {"config": {"chunk_gap_ms": 100, "chunks": 60}},  # tokens keep coming
    "silent": {"behavior": {"stall_after_chunks": 2, "stall_ms": 15000}},  # quiet mid-answer
    "first": {"behavior": {"stall_before_first_byte_ms": 15000}},  # nothing at all yet
}


@pytest.mark.parametrize("route", list(ROUTES))
@pytest.mark.parametrize("when", list(SETUPS))
def test_cancel_closes_upstream_within_100ms(
    cancel_server: Ensemble, fake: FakeUpstream, route: str, when: str
) -> None:
    endpoint = f"solo-c-{route}-{when}"
    setup = SETUPS[when]
    if "config" in setup:
        fake.configure(endpoint, **setup["config"])
    else:
        fake.enqueue(endpoint, setup["behavior"])
    rid = f"req-cancel-{route}-{when}"
    req = start(cancel_server, route, f"s-c-{route}-{when}", rid)
    if when == "first":
        wait_until(lambda: fake.requests(endpoint))  # the upstream call is open, silent
        time.sleep(0.2)  # the behaviour under test: a client that waits a while for a first byte
    else:
        req.read_until(ROUTES[route][2])
        if when == "silent":
            time.sleep(0.3)  # the behaviour under test: the client stays while the upstream is quiet
    closed_at = req.close()
    delay = upstream_closed_after(fake, endpoint, closed_at)
    print(f"cancel {route}/{when}: upstream closed {delay * 1000:.1f} ms after the client")
    assert delay < CANCEL_WITHIN, f"upstream closed {delay * 1000:.1f} ms after the client"
    row = log_row(cancel_server, rid)
    assert row["http_status"] == 499 and row["status"] == "error"
    if when != "first":
        assert row["output_tokens"] > 0  # what was streamed is still billed


def test_cancel_on_whole_answer_route(cancel_server: Ensemble, fake: FakeUpstream) -> None:
    fake.enqueue("solo-c-whole", {"stall_before_first_byte_ms": 15000})
    req = RawRequest(
        cancel_server.url,
        "/api/v1/generate",
        cancel_server.key,
        {"model": "s-c-whole", "messages": HELLO},
        "rq-w",
    )
    wait_until(lambda: fake.requests("solo-c-whole"))
    time.sleep(0.2)  # the behaviour under test: a client that waits a while for the answer, then leaves
    closed_at = req.close()
    assert upstream_closed_after(fake, "solo-c-whole", closed_at) < CANCEL_WITHIN
    assert log_row(cancel_server, "rq-w")["http_status"] == 499


def retrieve(server: Ensemble, rid: str) -> dict[str, Any]:
    with server.client() as c:

        def stored() -> Any:
            x = c.get(f"/api/v1/retrieve/{rid}")
            return x if x.status_code == 200 else None

        r = wait_until(stored, timeout=20)
        status = c.get(f"/api/v1/status/{rid}").json()
    assert status["status"] == "completed"
    body: dict[str, Any] = r.json()
    return body


def reference_text(server: Ensemble, model: str) -> str:
    with server.client() as c:
        r = c.post("/api/v1/generate", json={"model": model, "messages": HELLO})
    assert r.status_code == 200
    return str(r.json()["content"])


@pytest.mark.parametrize("when", list(SETUPS))
def test_complete_finishes_and_stores_the_answer(
    complete_server: Ensemble, fake: FakeUpstream, when: str
) -> None:
    endpoint = f"solo-k-{when}"
    setup = SETUPS[when]
    if "config" in setup:
        fake.configure(endpoint, chunk_gap_ms=20, chunks=30)
    else:
        behavior = dict(setup["behavior"])
        for k in ("stall_ms", "stall_before_first_byte_ms"):
            if k in behavior:
                behavior[k] = 300  # below the 500 ms stall timeout: slow, not stalled
        fake.enqueue(endpoint, behavior)
    rid = f"req-complete-{when}"
    req = start(complete_server, "native", f"s-k-{when}", rid)
    if when == "first":
        wait_until(lambda: fake.requests(endpoint))  # the upstream call is open, nothing streamed yet
    else:
        req.read_until(b"event: block")
    req.close()
    body = retrieve(complete_server, rid)
    assert body["id"] == rid and body["finish_reason"] == "stop"
    assert body["content"] == reference_text(complete_server, f"s-k-{when}")
    assert body["output_tokens"] > 0 and body["cost_micro_dollars"] > 0
    assert fake_record(fake, endpoint, 0)["client_disconnected"] is False  # upstream ran to the end
    row = log_row(complete_server, rid)
    assert row["status"] == "success" and row["http_status"] == 200


def test_status_reports_pending_then_streaming(complete_server: Ensemble, fake: FakeUpstream) -> None:
    fake.enqueue("solo-k-status", {"stall_before_first_byte_ms": 400})
    req = start(complete_server, "native", "s-k-status", "req-status-1")
    with complete_server.client() as c:
        wait_until(lambda: fake.requests("solo-k-status"))
        assert c.get("/api/v1/status/req-status-1").json()["status"] == "pending"
        req.read_until(b"event: done")
        req.close()
        fake.enqueue("solo-k-status", {"stall_after_chunks": 2, "stall_ms": 400})
        req2 = start(complete_server, "native", "s-k-status", "req-status-2")
        req2.read_until(b"event: block")
        live = c.get("/api/v1/status/req-status-2").json()
        assert live["status"] == "streaming" and live["provider"] == "solo-k-status"
        req2.read_until(b"event: done")
        req2.close()

        def completed() -> Any:
            x = c.get("/api/v1/status/req-status-2").json()
            return x if x["status"] == "completed" else None

        done = wait_until(completed)
        assert done["completed_at"]
        # Another key sees nothing, in flight or not.
        other = complete_server.create_key("other")
        complete_server.wait_for_key(other)
        assert (
            c.get("/api/v1/status/req-status-2", headers={"authorization": f"Bearer {other}"}).status_code
            == 404
        )
