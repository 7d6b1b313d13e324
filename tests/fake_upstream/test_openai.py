"""OpenAI wire format, checked with the official ``openai`` SDK."""

from __future__ import annotations

import json
import time

import httpx
import openai
import orjson
import pytest

from .conftest import Fake, track

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer"},
                "metric": {"type": "boolean"},
                "unit": {"type": "string", "enum": ["c", "f"]},
            },
            "required": ["city", "days", "metric", "unit"],
        },
    },
}
MESSAGES = [{"role": "user", "content": "Hi there, what is the weather like in Paris?"}]


def client(fake: Fake, prefix: str = "", **kw: object) -> openai.OpenAI:
    return track(openai.OpenAI(base_url=f"{fake.url}{prefix}/v1", api_key="sk-test", max_retries=0, **kw))  # type: ignore[arg-type]


def collect(
    stream: openai.Stream[openai.types.chat.ChatCompletionChunk],
) -> tuple[str, list[openai.types.chat.ChatCompletionChunk]]:
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, chunks


def test_create_text(fake: Fake) -> None:
    r = client(fake).chat.completions.create(model="gpt-4o", messages=MESSAGES)  # type: ignore[arg-type]
    assert r.object == "chat.completion" and r.model == "gpt-4o" and r.id.startswith("chatcmpl-")
    msg = r.choices[0].message
    assert msg.role == "assistant"
    assert msg.content is not None and msg.content.startswith(
        "Hello from fake-openai. You said: Hi there, what is"
    )
    assert r.choices[0].finish_reason == "stop"
    assert r.usage is not None
    assert r.usage.completion_tokens == 20
    assert r.usage.prompt_tokens == -(-len(MESSAGES[0]["content"]) // 4)
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert r.usage.prompt_tokens_details is not None and r.usage.prompt_tokens_details.cached_tokens == 0
    # ids are fresh per response even on the cached fast path
    r2 = client(fake).chat.completions.create(model="gpt-4o", messages=MESSAGES)  # type: ignore[arg-type]
    assert r2.id != r.id and r2.choices[0].message.content == msg.content


def test_stream_matches_json(fake: Fake) -> None:
    c = client(fake)
    full = c.chat.completions.create(model="gpt-4o", messages=MESSAGES)  # type: ignore[arg-type]
    stream = c.chat.completions.create(
        model="gpt-4o",
        messages=MESSAGES,
        stream=True,  # type: ignore[arg-type]
        stream_options={"include_usage": True},
    )
    text, chunks = collect(stream)
    assert text == full.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert sum(1 for ch in chunks if ch.choices and ch.choices[0].delta.content) == 20
    finals = [ch for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert [f.choices[0].finish_reason for f in finals] == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage == full.usage
    # without include_usage there is no usage chunk
    _, chunks = collect(c.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))  # type: ignore[arg-type]
    assert all(ch.choices and ch.usage is None for ch in chunks)


def test_tool_call_and_tool_result(fake: Fake) -> None:
    c = client(fake)
    r = c.chat.completions.create(model="gpt-4o", messages=MESSAGES, tools=[WEATHER_TOOL])  # type: ignore[arg-type,list-item]
    assert r.choices[0].finish_reason == "tool_calls"
    call = r.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    args = {"city": "test", "days": 1, "metric": True, "unit": "c"}
    assert json.loads(call.function.arguments) == args  # type: ignore[union-attr]

    stream = c.chat.completions.create(
        model="gpt-4o",
        messages=MESSAGES,
        tools=[WEATHER_TOOL],  # type: ignore[arg-type,list-item]
        stream=True,
        stream_options={"include_usage": True},
    )
    _, chunks = collect(stream)
    deltas = [tc for ch in chunks if ch.choices for tc in (ch.choices[0].delta.tool_calls or [])]
    assert deltas[0].id and deltas[0].function and deltas[0].function.name == "get_weather"
    fragments = [d.function.arguments for d in deltas if d.function and d.function.arguments]
    assert len(fragments) >= 3
    assert json.loads("".join(fragments)) == args
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == len(fragments)

    followup = [
        *MESSAGES,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]
    r2 = c.chat.completions.create(model="gpt-4o", messages=followup, tools=[WEATHER_TOOL])  # type: ignore[arg-type,list-item]
    assert r2.choices[0].finish_reason == "stop" and r2.choices[0].message.content

    forced = c.chat.completions.create(  # type: ignore[call-overload]
        model="gpt-4o",
        messages=MESSAGES,
        tools=[
            {"type": "function", "function": {"name": "noop", "parameters": {"type": "object"}}},
            WEATHER_TOOL,
        ],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    assert forced.choices[0].message.tool_calls[0].function.name == "get_weather"
    none = c.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, tools=[WEATHER_TOOL], tool_choice="none"
    )  # type: ignore[arg-type,list-item]
    assert none.choices[0].message.tool_calls is None


def test_max_tokens_and_usage_config(fake: Fake) -> None:
    fake.config(cached_tokens=7, reasoning_tokens=11, chunks=10)
    c = client(fake)
    r = c.chat.completions.create(model="o3", messages=MESSAGES, max_completion_tokens=4)  # type: ignore[arg-type]
    assert r.choices[0].finish_reason == "length"
    u = r.usage
    assert u is not None and u.completion_tokens == 4 + 11
    assert u.prompt_tokens_details is not None and u.prompt_tokens_details.cached_tokens == 7
    assert u.completion_tokens_details is not None and u.completion_tokens_details.reasoning_tokens == 11
    text, chunks = collect(
        c.chat.completions.create(
            model="o3",
            messages=MESSAGES,
            max_tokens=4,
            stream=True,  # type: ignore[arg-type]
            stream_options={"include_usage": True},
        )
    )
    assert text == r.choices[0].message.content and chunks[-1].usage == u


@pytest.mark.parametrize(
    "cfg",
    [
        {"framing": "crlf"},
        {"framing": "cr"},
        {"framing": "mixed"},
        {"comments": True},
        {"split_bytes": 7, "framing": "crlf"},
        {"split_bytes": 2, "framing": "mixed", "comments": True, "chunks": 4},
    ],
)
def test_framing_variants(fake: Fake, cfg: dict[str, object]) -> None:
    c = client(fake)
    fake.config(**cfg)  # type: ignore[arg-type]
    expected = c.chat.completions.create(model="gpt-4o", messages=MESSAGES).choices[0].message.content  # type: ignore[arg-type]
    text, chunks = collect(
        c.chat.completions.create(
            model="gpt-4o",
            messages=MESSAGES,
            stream=True,  # type: ignore[arg-type]
            stream_options={"include_usage": True},
        )
    )
    assert text == expected
    assert chunks[-1].usage is not None


def test_raw_framing_bytes(fake: Fake) -> None:
    fake.config(framing="crlf", comments=True)
    body = {"model": "m", "messages": MESSAGES, "stream": True}
    raw = httpx.post(f"{fake.url}/v1/chat/completions", json=body).content
    assert raw.startswith(b": keepalive\r\n\r\ndata: {")
    assert raw.endswith(b"data: [DONE]\r\n\r\n") and b"\n\n" not in raw.replace(b"\r\n", b"")
    fake.config(framing="cr", comments=False)
    raw = httpx.post(f"{fake.url}/v1/chat/completions", json=body).content
    assert b"\n" not in raw and raw.endswith(b"data: [DONE]\r\r")


def test_ndjson_framing_and_usage_without_asking(fake: Fake) -> None:
    """`framing: ndjson` sends each chunk's JSON on a line of its own (no SSE, no [DONE]);
    `stream_usage_always` ends the stream with usage although the request did not ask for it."""
    body = {"model": "m", "messages": MESSAGES, "stream": True}
    sse_lines = [
        line[6:] for line in httpx.post(f"{fake.url}/v1/chat/completions", json=body).content.split(b"\n\n")
    ]
    fake.config(framing="ndjson", stream_usage_always=True)
    for paced in ({}, {"split_bytes": 5}):
        fake.config(**paced)  # type: ignore[arg-type]
        resp = httpx.post(f"{fake.url}/v1/chat/completions", json=body)
        assert resp.headers["content-type"] == "application/x-ndjson"
        lines = resp.content.split(b"\n")
        assert lines[-1] == b"" and b"data:" not in resp.content and b"[DONE]" not in resp.content
        chunks = [orjson.loads(line) for line in lines[:-1]]
        assert len(chunks) == len([x for x in sse_lines if x and x != b"[DONE]"]) + 1  # + the usage chunk
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
        assert text == "".join(
            orjson.loads(x)["choices"][0]["delta"].get("content") or ""
            for x in sse_lines
            if x and x != b"[DONE]"
        )


def test_errors_and_headers(fake: Fake) -> None:
    c = client(fake)
    fake.enqueue({"status": 429, "retry_after": 2, "count": 2}, {"status": 503})
    for _ in range(2):
        with pytest.raises(openai.RateLimitError) as e:
            c.chat.completions.create(model="gpt-4o", messages=MESSAGES)  # type: ignore[arg-type]
        assert e.value.response.headers["retry-after"] == "2"
        assert e.value.response.headers["x-ratelimit-remaining-requests"] == "0"
        assert e.value.code == "rate_limit_exceeded"
    with pytest.raises(openai.InternalServerError) as e2:
        c.chat.completions.create(model="gpt-4o", messages=MESSAGES)  # type: ignore[arg-type]
    assert e2.value.status_code == 503
    raw = c.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES)  # type: ignore[arg-type]
    for h in ("limit-requests", "remaining-requests", "limit-tokens", "remaining-tokens", "reset-requests"):
        assert f"x-ratelimit-{h}" in raw.headers
    with pytest.raises(openai.BadRequestError) as e3:
        c.chat.completions.create(model="gpt-4o", messages=[])
    assert e3.value.body["param"] == "messages"  # type: ignore[index]
    bad = httpx.post(f"{fake.url}/v1/chat/completions", content=b"{nope")
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"


def test_require_api_key(fake: Fake) -> None:
    fake.config(require_api_key="sk-right")
    with pytest.raises(openai.AuthenticationError):
        client(fake).chat.completions.create(model="gpt-4o", messages=MESSAGES)  # type: ignore[arg-type]
    ok = track(openai.OpenAI(base_url=f"{fake.url}/v1", api_key="sk-right", max_retries=0))
    assert ok.chat.completions.create(model="gpt-4o", messages=MESSAGES).choices  # type: ignore[arg-type]


def test_models_and_endpoint_prefix(fake: Fake) -> None:
    assert "gpt-4o" in [m.id for m in client(fake, "/ep-a").models.list()]
    client(fake, "/ep-a").chat.completions.create(model="gpt-4o", messages=MESSAGES)  # type: ignore[arg-type]
    client(fake, "/team/ep-b").chat.completions.create(model="gpt-4o", messages=MESSAGES)  # type: ignore[arg-type]
    assert [r["endpoint"] for r in fake.requests("ep-a")] == ["ep-a", "ep-a"]
    (rec,) = fake.requests("team/ep-b")
    assert rec["body"]["model"] == "gpt-4o" and rec["headers"]["authorization"] == "Bearer sk-test"
    assert rec["status"] == 200 and rec["finished_at"] >= rec["started_at"]


def test_behaviours_per_endpoint(fake: Fake) -> None:
    fake.enqueue({"status": 500}, endpoint="ep-a")
    client(fake, "/ep-b").chat.completions.create(model="gpt-4o", messages=MESSAGES)  # type: ignore[arg-type]
    with pytest.raises(openai.InternalServerError):
        client(fake, "/ep-a").chat.completions.create(model="gpt-4o", messages=MESSAGES)  # type: ignore[arg-type]
    client(fake, "/ep-a").chat.completions.create(model="gpt-4o", messages=MESSAGES)  # type: ignore[arg-type]


def test_mid_stream_faults(fake: Fake) -> None:
    c = client(fake)
    fake.enqueue(
        {"error_event_after_chunks": 3},
        {"malformed_after_chunks": 2},
        {"reset_after_chunks": 4},
        {"close_connection": True},
    )
    with pytest.raises(openai.APIError):
        collect(c.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))  # type: ignore[arg-type]
    with pytest.raises(json.JSONDecodeError):
        collect(c.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))  # type: ignore[arg-type]
    got: list[str] = []
    with pytest.raises(Exception) as exc_info:
        for ch in c.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True):  # type: ignore[arg-type]
            got.append(ch.choices[0].delta.content or "")
    assert len(got) == 4, exc_info.value
    with pytest.raises(openai.APIConnectionError):
        c.chat.completions.create(model="gpt-4o", messages=MESSAGES)  # type: ignore[arg-type]
    assert c.chat.completions.create(model="gpt-4o", messages=MESSAGES).choices  # type: ignore[arg-type]


def test_stalls(fake: Fake) -> None:
    c = client(fake, timeout=0.3)
    fake.enqueue({"stall_before_first_byte_ms": 1500})
    with pytest.raises(openai.APITimeoutError):
        c.chat.completions.create(model="gpt-4o", messages=MESSAGES)  # type: ignore[arg-type]
    fake.enqueue({"stall_after_chunks": 2, "stall_ms": 400})
    t0 = time.monotonic()
    text, _ = collect(client(fake).chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))  # type: ignore[arg-type]
    assert time.monotonic() - t0 >= 0.4 and text.startswith("Hello from fake-openai")


def test_latency_and_disconnect_recorded(fake: Fake) -> None:
    fake.config(latency_ms=150)
    t0 = time.monotonic()
    client(fake).chat.completions.create(model="gpt-4o", messages=MESSAGES)  # type: ignore[arg-type]
    assert time.monotonic() - t0 >= 0.15
    fake.config(latency_ms=0, chunk_gap_ms=50)
    stream = client(fake).chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)  # type: ignore[arg-type]
    for i, _ in enumerate(stream):
        if i == 2:
            break
    stream.close()
    closed_at = time.time()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        rec = fake.requests()[-1]
        if rec["client_disconnected"]:
            break
        time.sleep(0.05)
    assert rec["client_disconnected"] and rec["stream"]
    assert abs(rec["disconnected_at"] - closed_at) < 1.0
    first = fake.requests()[0]
    assert first["client_disconnected"] is False


def test_control_api_validation(fake: Fake) -> None:
    r = fake.http.put("/_fake/config", json={"endpoint": "x", "framing": "weird"})
    assert r.status_code == 400 and "framing" in r.json()["error"]
    r = fake.http.put("/_fake/config", json={"nope": 1})
    assert r.status_code == 400
    r = fake.http.post("/_fake/enqueue", json={"behaviors": [{"statuss": 500}]})
    assert r.status_code == 400
    assert fake.http.get("/_fake/health").json()["status"] == "ok"
    cfg = fake.config("x", chunks=3)
    assert cfg["chunks"] == 3 and cfg["framing"] is None
    fake.enqueue({"status": 500, "count": 3}, endpoint="x")
    assert len(fake.http.get("/_fake/config", params={"endpoint": "x"}).json()["queued"]) == 3
