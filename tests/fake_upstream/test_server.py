"""Process-level behaviour: CLI flags, routing, control API, faults on non-streamed bodies."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from .conftest import Fake, start_fake, track

pytestmark = pytest.mark.integration

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}]}


def test_cli_defaults() -> None:
    other = start_fake("--chunks", "5", "--latency-ms", "120", "--chunk-gap-ms", "10")
    url = other.url
    try:
        t0 = time.monotonic()
        r = httpx.post(f"{url}/v1/chat/completions", json=CHAT)
        assert time.monotonic() - t0 >= 0.12
        assert r.json()["usage"]["completion_tokens"] == 5
        cfg = httpx.get(f"{url}/_fake/config").json()["config"]
        assert cfg["chunks"] == 5 and cfg["latency_ms"] == 120 and cfg["chunk_gap_ms"] == 10
    finally:
        other.stop()


def test_unknown_routes_use_provider_shapes(fake: Fake) -> None:
    r = httpx.post(f"{fake.url}/v1/nope", json={})
    assert r.status_code == 404 and r.json()["error"]["type"] == "invalid_request_error"
    r = httpx.post(f"{fake.url}/v1/nope", json={}, headers={"anthropic-version": "2023-06-01"})
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
    r = httpx.post(f"{fake.url}/v1beta/models/gemini-2.5-flash:explode", json={})
    assert r.status_code == 404 and r.json()["error"]["status"] == "NOT_FOUND"
    r = httpx.get(f"{fake.url}/v1/chat/completions")
    assert r.status_code == 404
    assert httpx.get(f"{fake.url}/v1beta/models").json()["models"][0]["name"].startswith("models/")
    assert httpx.post(f"{fake.url}/_fake/nope").status_code == 404
    assert httpx.put(f"{fake.url}/_fake/config", content=b"[1").status_code == 400


def test_reset_one_endpoint(fake: Fake) -> None:
    fake.config("a", chunks=3)
    fake.config("b", chunks=4)
    httpx.post(f"{fake.url}/a/v1/chat/completions", json=CHAT)
    httpx.post(f"{fake.url}/b/v1/chat/completions", json=CHAT)
    assert httpx.post(f"{fake.url}/_fake/reset", json={"endpoint": "a"}).status_code == 200
    assert fake.requests("a") == [] and len(fake.requests("b")) == 1
    assert httpx.get(f"{fake.url}/_fake/config", params={"endpoint": "a"}).json()["config"]["chunks"] == 20
    assert httpx.get(f"{fake.url}/_fake/config", params={"endpoint": "b"}).json()["config"]["chunks"] == 4


def test_ratelimit_headers_count_down(fake: Fake) -> None:
    fake.config(ratelimit_requests=50, ratelimit_tokens=1000)
    first = httpx.post(f"{fake.url}/v1/chat/completions", json=CHAT).headers
    second = httpx.post(f"{fake.url}/v1/chat/completions", json=CHAT).headers
    assert first["x-ratelimit-limit-requests"] == "50"
    assert int(second["x-ratelimit-remaining-requests"]) == int(first["x-ratelimit-remaining-requests"]) - 1
    assert int(second["x-ratelimit-remaining-tokens"]) < int(first["x-ratelimit-remaining-tokens"])
    fake.config(ratelimit_remaining_requests=3, ratelimit_remaining_tokens=7)
    h = httpx.post(f"{fake.url}/v1/chat/completions", json=CHAT).headers
    assert h["x-ratelimit-remaining-requests"] == "3" and h["x-ratelimit-remaining-tokens"] == "7"


def test_faults_on_json_bodies(fake: Fake) -> None:
    c = track(openai.OpenAI(base_url=f"{fake.url}/v1", api_key="k", max_retries=0))
    fake.enqueue(
        {"reset_after_chunks": 3}, {"malformed_after_chunks": 2}, {"stall_after_chunks": 1, "stall_ms": 300}
    )
    with pytest.raises(openai.APIConnectionError):
        c.chat.completions.create(**CHAT)  # type: ignore[call-overload]
    r = httpx.post(f"{fake.url}/v1/chat/completions", json=CHAT)
    assert r.status_code == 200 and r.content.endswith(b',{"malformed": tru')
    t0 = time.monotonic()
    assert c.chat.completions.create(**CHAT).choices  # type: ignore[call-overload]
    assert time.monotonic() - t0 >= 0.3
    recs = fake.requests()
    assert [rec["behavior"] for rec in recs] == [
        {"reset_after_chunks": 3},
        {"malformed_after_chunks": 2},
        {"stall_after_chunks": 1, "stall_ms": 300.0},
    ]


def test_disconnect_during_latency_is_recorded(fake: Fake) -> None:
    fake.config(latency_ms=2000)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{fake.url}/v1/chat/completions", json=CHAT, timeout=0.2)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and not fake.requests()[0]["client_disconnected"]:
        time.sleep(0.05)
    rec = fake.requests()[0]
    assert rec["client_disconnected"] and rec["disconnected_at"] - rec["started_at"] < 1.5


def test_anthropic_stream_disconnect_recorded(fake: Fake) -> None:
    fake.config("slow", chunk_gap_ms=40)
    body = {
        "model": "claude-haiku-4-5",
        "max_tokens": 100,
        "stream": True,
        "messages": [{"role": "user", "content": "hi"}],
    }
    with (
        httpx.Client() as client,
        client.stream(
            "POST", f"{fake.url}/slow/v1/messages", json=body, headers={"anthropic-version": "2023-06-01"}
        ) as r,
    ):
        for i, _ in enumerate(r.iter_lines()):
            if i == 6:
                break
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and not fake.requests("slow")[0]["client_disconnected"]:
        time.sleep(0.05)
    rec = fake.requests("slow")[0]
    assert rec["client_disconnected"] and rec["finished_at"] - rec["started_at"] < 0.9


@pytest.mark.parametrize(
    "path",
    [
        "/v1/chat/completions",
        "/v1/messages",
        "/v1/messages/count_tokens",
        "/v1/messages/batches",
        "/v1beta/models/g:generateContent",
        "/v1beta/models/g:streamGenerateContent?alt=sse",
        "/v1beta/models/g:countTokens",
    ],
)
def test_malformed_requests_get_4xx(fake: Fake, path: str) -> None:
    headers = {"anthropic-version": "2023-06-01", "content-type": "application/json"}
    bodies = [
        b"",
        b"{",
        b"\xff\xfe",
        b"[]",
        b'{"model": 1}',
        b'{"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": 5}], "tools": 1.5,'
        b' "contents": [{"parts": 7}], "requests": 1}',
        b'{"model": "m", "messages": {}, "contents": [{"role": 5}], "tool_choice": [], "system": [{"x": 1}]}',
    ]
    for body in bodies:
        r = httpx.post(f"{fake.url}{path}", content=body, headers=headers)
        assert r.status_code < 500, (body, r.status_code, r.text)
