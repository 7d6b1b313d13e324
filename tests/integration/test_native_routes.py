"""The native API end to end against a real `ensemble serve` (mock provider)."""

from __future__ import annotations

import contextlib

import httpx
import orjson
import pytest

from ensemble.storage import database, keys
from support.ensemble import Ensemble

pytestmark = pytest.mark.integration

HELLO = [{"role": "user", "content": "Hello there, gateway"}]


def sse_events(text: str) -> list[tuple[str, dict[str, object]]]:
    events = []
    for frame in text.split("\n\n"):
        if not frame.strip():
            continue
        lines = dict(line.split(": ", 1) for line in frame.split("\n"))
        events.append((lines["event"], orjson.loads(lines["data"])))
    return events


def test_generate_returns_inference_response(mock_gateway: Ensemble) -> None:
    with mock_gateway.client() as c:
        r = c.post("/api/v1/generate", json={"model": "mock-1", "messages": HELLO})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["content"] == "This is a mock answer from Ensemble. You said: Hello there, gateway"
    assert body["blocks"] == [{"type": "text", "text": body["content"]}]
    assert body["finish_reason"] == "stop"
    assert body["provider"] == "mock" and body["endpoint_id"] == "mock-local"
    assert body["input_tokens"] == len("Hello there, gateway") // 4
    assert body["output_tokens"] == len(body["content"].split(" "))
    # mock-1 pricing: $1 / $2 per million tokens
    expected_micro = body["input_tokens"] * 1 + body["output_tokens"] * 2
    assert body["cost_micro_dollars"] == expected_micro
    assert body["usage"]["inputTokens"] == body["input_tokens"]
    assert set(body["performance"]) == {"ttft_ms", "upstream_ms", "overhead_ms"}
    assert r.headers["x-request-id"] == body["id"] and body["id"].startswith("req_")
    assert r.headers["x-ensemble-provider"] == "mock"
    assert r.headers["x-ensemble-endpoint"] == "mock-local"
    assert float(r.headers["x-ensemble-overhead-ms"]) >= 0
    for h in ("limit-requests", "remaining-requests", "limit-tokens", "remaining-tokens"):
        assert f"x-ratelimit-{h}" in r.headers


def test_camel_case_fields_are_accepted(mock_gateway: Ensemble) -> None:
    with mock_gateway.client() as c:
        r = c.post(
            "/api/v1/generate",
            json={
                "model": "mock-1",
                "messages": HELLO,
                "maxTokens": 3,
                "topP": 0.5,
                "stopSequences": ["x"],
                "sessionId": "s1",
                "providerConfig": {},
            },
        )
    assert r.status_code == 200, r.text
    assert r.json()["content"] == "This is a"
    assert r.json()["finish_reason"] == "length"


def test_supplied_request_id_is_echoed(mock_gateway: Ensemble) -> None:
    with mock_gateway.client() as c:
        r = c.post(
            "/api/v1/generate",
            json={"model": "mock-1", "messages": HELLO},
            headers={"x-request-id": "my-trace.42"},
        )
    assert r.headers["x-request-id"] == "my-trace.42" and r.json()["id"] == "my-trace.42"


def test_stream_sends_blocks_then_done(mock_gateway: Ensemble) -> None:
    with mock_gateway.client() as c:
        r = c.post("/api/v1/stream", json={"model": "mock-1", "messages": HELLO})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    names = [e for e, _ in events]
    assert names[-1] == "done" and set(names[:-1]) == {"block"} and len(names) > 2
    streamed = "".join(str(d["text"]) for e, d in events if e == "block")
    done = events[-1][1]
    assert streamed == done["content"]
    with mock_gateway.client() as c:
        whole = c.post("/api/v1/generate", json={"model": "mock-1", "messages": HELLO}).json()
    for field in ("content", "blocks", "input_tokens", "output_tokens", "cost", "finish_reason"):
        assert done[field] == whole[field], field


def test_stream_of_a_tool_call(mock_gateway: Ensemble) -> None:
    tool = {
        "name": "get_weather",
        "description": "Weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
    with mock_gateway.client() as c:
        r = c.post("/api/v1/stream", json={"model": "mock-1", "messages": HELLO, "tools": [tool]})
    events = sse_events(r.text)
    blocks = [d for e, d in events if e == "block"]
    assert blocks[0]["tool_call"]["name"] == "get_weather"  # type: ignore[index]
    raw = "".join(str(b["tool_call"]["raw_arguments"]) for b in blocks)  # type: ignore[index]
    assert orjson.loads(raw) == {"city": "test"}
    done = events[-1][1]
    assert done["finish_reason"] == "tool_use"
    assert done["blocks"] == [
        {
            "type": "tool_call",
            "tool_call": {
                "id": blocks[0]["tool_call"]["id"],
                "name": "get_weather",  # type: ignore[index]
                "arguments": {"city": "test"},
                "raw_arguments": raw,
            },
        }
    ]


def test_text_stream_is_plain_text(mock_gateway: Ensemble) -> None:
    with (
        mock_gateway.client() as c,
        c.stream("POST", "/api/v1/generate/stream", json={"model": "mock-1", "messages": HELLO}) as r,
    ):
        assert r.headers["content-type"] == "text/plain; charset=utf-8"
        assert r.headers.get("transfer-encoding") == "chunked"
        chunks = list(r.iter_text())
    assert "".join(chunks) == "This is a mock answer from Ensemble. You said: Hello there, gateway"


def test_models_and_health(mock_gateway: Ensemble) -> None:
    with mock_gateway.client() as c:
        models = c.get("/api/v1/models").json()["models"]
        oai = c.get("/v1/models").json()
    assert [m["id"] for m in models] == ["mock-1"]
    assert models[0]["capabilities"]["streaming"] is True and models[0]["providers"] == ["mock"]
    assert oai["object"] == "list" and oai["data"][0]["id"] == "mock-1"
    for path in ("/health", "/api/v1/health"):
        h = httpx.get(mock_gateway.url + path).json()
        assert h["status"] == "healthy" and h["providers"] == {"mock": "healthy"} and h["version"]


def test_status_and_retrieve_are_per_key(mock_gateway: Ensemble) -> None:
    with mock_gateway.client() as c:
        made = c.post("/api/v1/generate", json={"model": "mock-1", "messages": HELLO}).json()
        status = c.get(f"/api/v1/status/{made['id']}").json()
        stored = c.get(f"/api/v1/retrieve/{made['id']}").json()
    assert status["status"] == "completed" and status["model"] == "mock-1"
    assert stored == made
    with contextlib.closing(database.connect_sync(str(mock_gateway.dir / "data" / "ensemble.db"))) as db:
        other, _ = keys.create_key(db, name="other")  # written behind the server's back: it polls
    assert mock_gateway.wait_for_key(other) < 1.5
    with mock_gateway.client(other) as c:
        assert c.get(f"/api/v1/retrieve/{made['id']}").status_code == 404
        assert c.get(f"/api/v1/status/{made['id']}").status_code == 404


@pytest.mark.parametrize("path", ["/api/v1/generate", "/api/v1/stream", "/api/v1/generate/stream"])
def test_routing_failures_happen_before_the_stream(mock_gateway: Ensemble, path: str) -> None:
    with mock_gateway.client() as c:
        r = c.post(path, json={"model": "nope", "messages": HELLO})
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/json"
    assert r.json()["error"]["type"] == "not_found"
