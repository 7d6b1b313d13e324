"""Upstream failures during streams, through a real `ensemble serve` and the fake upstream.

Before any content reached the client the gateway fails over (next endpoint, then next provider);
after, the client gets a clean in-band error with a retryable flag, and the usage streamed so far
is recorded exactly once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from support.ensemble import Ensemble
from support.fake import FakeUpstream

from .conftest import HELLO, fake_record, log_row, make_server, scenario_providers, solo_providers, sse_events

pytestmark = pytest.mark.integration

SCENARIOS = ["firststall", "c529", "errfirst", "reference"]
SOLO = ["midstall", "firststall", "reset", "malformed", "errevt", "overall", "c529", "plain"]


@pytest.fixture(scope="module")
def server(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ensemble]:
    providers = scenario_providers(fake, SCENARIOS) + solo_providers(fake, SOLO)
    s = make_server(Path(tmp_path_factory.mktemp("faults")), providers)
    yield s
    s.stop()


def stream(server: Ensemble, model: str, request_id: str) -> httpx.Response:
    with server.client() as c:
        return c.post(
            "/api/v1/stream",
            json={"model": model, "messages": HELLO},
            headers={"x-request-id": request_id},
        )


def blocks_and_tail(r: httpx.Response) -> tuple[str, tuple[str, dict[str, object]]]:
    events = sse_events(r.text)
    text = "".join(str(e[1].get("text", "")) for e in events if e[0] == "block")
    return text, events[-1]


def full_text(server: Ensemble) -> str:
    r = stream(server, "s-plain", "req-plain-reference")
    assert r.status_code == 200
    text, (kind, _) = blocks_and_tail(r)
    assert kind == "done"
    return text


def check_mid_stream_error(
    server: Ensemble, fake: FakeUpstream, name: str, behavior: dict[str, object], code: str, http: int
) -> None:
    fake.enqueue(f"solo-{name}", behavior)
    rid = f"req-{name}-1"
    t0 = time.monotonic()
    r = stream(server, f"s-{name}", rid)
    elapsed = time.monotonic() - t0
    assert r.status_code == 200  # the stream had started: the failure is in-band
    text, (kind, data) = blocks_and_tail(r)
    assert kind == "error", r.text
    err = data["error"]
    assert isinstance(err, dict)
    assert err["code"] == code and err["request_id"] == rid
    assert len(text) > 0 and full_text(server).startswith(text) and text != full_text(server)
    row = log_row(server, rid)
    assert row["status"] == "error" and row["http_status"] == http
    assert row["output_tokens"] > 0 and row["input_tokens"] > 0  # what was streamed is billed
    assert row["cost_micro_dollars"] > 0
    assert row["endpoint_id"] == f"solo-{name}"
    assert elapsed < 5
    return None


def test_stall_mid_stream_ends_with_retryable_error(server: Ensemble, fake: FakeUpstream) -> None:
    t0 = time.monotonic()
    check_mid_stream_error(
        server, fake, "midstall", {"stall_after_chunks": 3, "stall_ms": 8000}, "stream_stalled", 504
    )
    assert time.monotonic() - t0 < 3  # stall_timeout 500ms, not the fake's 8 s stall
    r = stream(server, "s-midstall", "req-midstall-2")  # the endpoint is not poisoned afterwards
    assert blocks_and_tail(r)[1][0] == "done"
    # The stalled upstream connection was closed by Ensemble, not left open.
    assert fake_record(fake, "solo-midstall", 0)["client_disconnected"] is True


def test_mid_stream_error_event_is_retryable(server: Ensemble, fake: FakeUpstream) -> None:
    fake.enqueue("solo-midstall", {"stall_after_chunks": 2, "stall_ms": 8000})
    r = stream(server, "s-midstall", "req-midstall-3")
    _, (kind, data) = blocks_and_tail(r)
    assert kind == "error" and data["error"]["retryable"] is True  # type: ignore[index]


def test_connection_reset_mid_stream(server: Ensemble, fake: FakeUpstream) -> None:
    check_mid_stream_error(server, fake, "reset", {"reset_after_chunks": 3}, "stream_broken", 502)


def test_malformed_sse_mid_stream(server: Ensemble, fake: FakeUpstream) -> None:
    check_mid_stream_error(
        server, fake, "malformed", {"malformed_after_chunks": 3}, "bad_upstream_stream", 502
    )


def test_upstream_error_event_mid_stream(server: Ensemble, fake: FakeUpstream) -> None:
    check_mid_stream_error(
        server, fake, "errevt", {"error_event_after_chunks": 3}, "upstream_stream_error", 502
    )


def test_overall_timeout_per_model_glob(server: Ensemble, fake: FakeUpstream) -> None:
    # s-overall* has overall_timeout 1s; chunks every 200 ms never trip the 500 ms stall timeout.
    fake.configure("solo-overall", chunk_gap_ms=200, chunks=20)
    t0 = time.monotonic()
    r = stream(server, "s-overall", "req-overall-1")
    elapsed = time.monotonic() - t0
    text, (kind, data) = blocks_and_tail(r)
    assert kind == "error" and data["error"]["code"] == "stream_timeout"  # type: ignore[index]
    assert 0.9 < elapsed < 2.5
    assert text
    row = log_row(server, "req-overall-1")
    assert row["http_status"] == 504 and row["output_tokens"] > 0


def test_stall_before_first_byte_fails_over(server: Ensemble, fake: FakeUpstream) -> None:
    fake.enqueue("ep-firststall", {"stall_before_first_byte_ms": 8000})
    t0 = time.monotonic()
    r = stream(server, "m-firststall", "req-firststall-1")
    assert time.monotonic() - t0 < 3
    assert r.status_code == 200
    assert r.headers["x-ensemble-endpoint"] == "bk-firststall"
    _, (kind, done) = blocks_and_tail(r)
    assert kind == "done" and done["endpoint_id"] == "bk-firststall"
    row = log_row(server, "req-firststall-1")
    assert row["status"] == "success" and row["endpoint_id"] == "bk-firststall"
    assert fake_record(fake, "ep-firststall")["client_disconnected"] is True


def test_stall_before_first_byte_without_backup_is_504(server: Ensemble, fake: FakeUpstream) -> None:
    fake.enqueue("solo-firststall", {"stall_before_first_byte_ms": 8000})
    r = stream(server, "s-firststall", "req-firststall-2")
    assert r.status_code == 504, r.text  # nothing was sent yet: an ordinary HTTP error
    assert r.json()["error"]["code"] == "stream_stalled"
    row = log_row(server, "req-firststall-2")
    assert row["http_status"] == 504 and row["output_tokens"] == 0


def test_529_before_first_byte_fails_over(server: Ensemble, fake: FakeUpstream) -> None:
    fake.enqueue("ep-c529", {"status": 529})
    r = stream(server, "m-c529", "req-c529-1")
    assert r.status_code == 200
    assert r.headers["x-ensemble-endpoint"] == "bk-c529"
    assert blocks_and_tail(r)[1][0] == "done"
    assert fake_record(fake, "ep-c529")["status"] == 529
    assert log_row(server, "req-c529-1")["status"] == "success"


def test_529_everywhere_is_429_with_retry_after(server: Ensemble, fake: FakeUpstream) -> None:
    fake.enqueue("solo-c529", {"status": 529, "retry_after": 3})
    r = stream(server, "s-c529", "req-c529-2")
    assert r.status_code == 429, r.text
    assert r.headers["retry-after"] == "3"
    row = log_row(server, "req-c529-2")
    assert row["http_status"] == 429 and row["status"] == "error"


def test_error_event_before_content_fails_over(server: Ensemble, fake: FakeUpstream) -> None:
    fake.enqueue("ep-errfirst", {"error_event_after_chunks": 0})
    r = stream(server, "m-errfirst", "req-errfirst-1")
    assert r.status_code == 200
    assert r.headers["x-ensemble-endpoint"] == "bk-errfirst"
    assert blocks_and_tail(r)[1][0] == "done"


def test_openai_route_gets_error_chunk_mid_stream(server: Ensemble, fake: FakeUpstream) -> None:
    fake.enqueue("solo-reset", {"reset_after_chunks": 2})
    with server.client() as c:
        r = c.post(
            "/v1/chat/completions",
            json={"model": "s-reset", "messages": HELLO, "stream": True},
            headers={"x-request-id": "req-reset-openai"},
        )
    assert r.status_code == 200
    events = sse_events("\n\n".join(f for f in r.text.split("\n\n") if "[DONE]" not in f))
    assert "error" in events[-1][1] and events[-1][1]["error"]["code"] == "stream_broken"
    assert log_row(server, "req-reset-openai")["http_status"] == 502


def test_anthropic_route_gets_error_event_after_a_mid_stream_stall(
    server: Ensemble, fake: FakeUpstream
) -> None:
    fake.enqueue("solo-midstall", {"stall_after_chunks": 3, "stall_ms": 8000})
    with server.client() as c:
        r = c.post(
            "/v1/messages",
            json={"model": "s-midstall", "max_tokens": 100, "messages": HELLO, "stream": True},
            headers={"x-request-id": "req-midstall-anthropic", "anthropic-version": "2023-06-01"},
        )
    assert r.status_code == 200
    events = sse_events(r.text)
    assert any(e[0] == "content_block_delta" for e in events)
    kind, data = events[-1]
    assert kind == "error" and "stream stalled" in data["error"]["message"], data
    assert log_row(server, "req-midstall-anthropic")["http_status"] == 504


@pytest.mark.parametrize(
    ("name", "behavior"),
    [
        ("reset", {"reset_after_chunks": 3}),
        ("midstall", {"stall_after_chunks": 3, "stall_ms": 8000}),
        ("errevt", {"error_event_after_chunks": 3}),
    ],
)
def test_plain_text_stream_is_aborted_not_ended_on_a_broken_answer(
    server: Ensemble, fake: FakeUpstream, name: str, behavior: dict[str, object]
) -> None:
    """`/api/v1/generate/stream` has no in-band error: a broken answer ends with the connection
    aborted (no terminating chunk), so an HTTP client sees an incomplete body, never a complete one."""
    body = {"model": f"s-{name}", "messages": HELLO}
    with server.client() as c:
        whole = c.post("/api/v1/generate/stream", json=body)
        assert whole.status_code == 200 and whole.text  # complete: ends normally
        fake.enqueue(f"solo-{name}", behavior)
        got = b""
        rid = f"req-plain-broken-{name}"
        with (
            pytest.raises(httpx.RemoteProtocolError),  # "incomplete chunked read" (or, under load, nothing)
            c.stream("POST", "/api/v1/generate/stream", json=body, headers={"x-request-id": rid}) as r,
        ):
            assert r.status_code == 200
            for chunk in r.iter_bytes():
                got += chunk
    assert whole.text.startswith(got.decode()) and len(got) < len(whole.content)
    assert log_row(server, rid)["status"] == "error"


def test_the_fault_run_left_no_unretrieved_exceptions(server: Ensemble) -> None:
    """Every future a fault completed with an exception was awaited or its exception taken:
    asyncio logs "exception was never retrieved" when such a future is collected, at the latest
    at the worker's shutdown (runs last in this module, after every fault above)."""
    assert server.stop() == 0
    output = server.process.output()
    assert "was never retrieved" not in output, output[-4000:]
