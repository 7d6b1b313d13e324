"""The same-format fast path against the canonical path, through real servers and the fake upstream.

Two gateways with the same providers, one with `server.native_streams` on (the default: native
decoding and the fast path) and one with it off (the Python decoders, every stream rendered), get
the same recorded upstream stream for the same request (same X-Request-ID). What each stores (the
answer, usage, cost, the request-log row) must be the same, byte for byte apart from timings; what
the fast path's client receives must be the provider's bytes, unchanged, and a stream that fails
must end with the same error event either way."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import orjson
import pytest

from support.ensemble import Ensemble
from support.fake import FakeUpstream
from support.recorded_streams import RECORDINGS, body

from .conftest import log_row, make_server

pytestmark = pytest.mark.integration

KEY = "sk-test-upstream-key-000000"
PRICING = {"input": 3.0, "output": 15.0, "cache_read": 0.3, "cache_write": 3.75}
MODELS = {"openai": "gpt-4o", "anthropic": "claude-sonnet-4-6", "gemini": "gemini-2.5-flash"}
# Volatile by nature: when the request ran, how long it took, the caller's own counters.
VOLATILE_COLUMNS = {"seq", "key_id", "latency_ms", "created_at"}
VOLATILE_ANSWER = ("processing_time_ms", "performance", "rate_limit")


def _providers(fake: FakeUpstream) -> list[dict[str, Any]]:
    return [
        {
            "name": f"pt-{kind}",
            "type": kind,
            "base_url": fake.endpoint_url(f"pt-{kind}"),
            "endpoints": [{"id": f"pt-{kind}", "api_key": KEY}],
            "models": [{"name": model, "max_output_tokens": 8192, "pricing": PRICING}],
        }
        for kind, model in MODELS.items()
    ]


@pytest.fixture(scope="module")
def servers(
    tmp_path_factory: pytest.TempPathFactory, fake: FakeUpstream
) -> Iterator[tuple[Ensemble, Ensemble]]:
    fast = make_server(Path(tmp_path_factory.mktemp("fast")), _providers(fake))
    canonical = make_server(
        Path(tmp_path_factory.mktemp("canonical")), _providers(fake), native_streams=False
    )
    yield fast, canonical
    fast.stop()
    canonical.stop()


def _request(kind: str) -> tuple[str, dict[str, Any], dict[str, str]]:
    """(path, body, headers) of a streamed request in `kind`'s own format."""
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    if kind == "openai":
        body = {
            "model": MODELS[kind],
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        return "/v1/chat/completions", body, {}
    if kind == "anthropic":
        body = {"model": MODELS[kind], "max_tokens": 500, "messages": messages, "stream": True}
        return "/v1/messages", body, {"anthropic-version": "2023-06-01"}
    contents = [{"role": "user", "parts": [{"text": messages[0]["content"]}]}]
    return f"/v1beta/models/{MODELS[kind]}:streamGenerateContent?alt=sse", {"contents": contents}, {}


def _replay(fake: FakeUpstream, server: Ensemble, name: str, request_id: str, **extra: Any) -> bytes:
    kind, events = RECORDINGS[name]
    behavior: dict[str, Any] = {"stream_body": events, **extra}
    if name.endswith("_error"):
        # The error comes well after the content before it (so the stream has started, and what
        # came first reached the client) whatever the machine's load.
        behavior |= {"stall_after_chunks": len(events) - 1, "stall_ms": 150}
    fake.enqueue(f"pt-{kind}", behavior)
    path, payload, headers = _request(kind)
    with server.client() as http:
        r = http.post(path, json=payload, headers={**headers, "x-request-id": request_id})
    assert r.status_code == 200, r.text
    return r.content


def _events(raw: bytes) -> list[bytes]:
    return [e for e in raw.replace(b"\r\n", b"\n").split(b"\n\n") if e.strip()]


def _stored(server: Ensemble, request_id: str) -> tuple[dict[str, Any], bytes | None]:
    """The request-log row and the stored answer (`GET /api/v1/retrieve`), timings blanked."""
    row = log_row(server, request_id)
    with server.client() as http:
        r = http.get(f"/api/v1/retrieve/{request_id}")
    answer = None
    if r.status_code == 200:
        decoded = orjson.loads(r.content)
        for field in VOLATILE_ANSWER:
            decoded[field] = None
        answer = orjson.dumps(decoded)  # key order kept: a byte comparison apart from timings
    else:
        assert r.status_code == 404 and row["status"] == "error", r.text
    return {k: v for k, v in row.items() if k not in VOLATILE_COLUMNS}, answer


@pytest.mark.parametrize("name", list(RECORDINGS))
def test_fast_and_canonical_paths_store_the_same(
    servers: tuple[Ensemble, Ensemble], fake: FakeUpstream, name: str
) -> None:
    fast, canonical = servers
    request_id = f"pt-{name}"
    upstream = body(name)
    via_canonical = _replay(fake, canonical, name, request_id)
    via_fast = _replay(fake, fast, name, request_id)

    fast_row, fast_answer = _stored(fast, request_id)
    canonical_row, canonical_answer = _stored(canonical, request_id)
    assert fast_row == canonical_row
    assert fast_answer == canonical_answer
    if name.endswith("_error"):
        assert fast_row["status"] == "error" and "provider stream error" in fast_row["error"]
        # Whole events only reached the client, then the same error event as on the canonical path.
        assert _events(via_fast)[:-1] == _events(upstream)[:-1]
        assert _events(via_fast)[-1] == _events(via_canonical)[-1]
    else:
        assert fast_row["status"] == "success" and fast_row["cost_micro_dollars"] > 0
        if RECORDINGS[name][0] == "openai":
            # The provider's bytes, with the answer's cost written into the final usage object.
            spliced = re.search(rb'"usage":\{"cost":([0-9.e-]+),', via_fast)
            assert spliced is not None and float(spliced.group(1)) > 0, via_fast[-400:]
            via_fast = via_fast.replace(spliced.group(0), b'"usage":{', 1)
        assert via_fast == upstream  # the provider's bytes, unchanged
        assert via_canonical != upstream  # (the canonical path renders its own)


@pytest.mark.parametrize("name", ["openai_text", "anthropic_text", "gemini_text"])
def test_a_connection_reset_mid_stream_ends_both_paths_alike(
    servers: tuple[Ensemble, Ensemble], fake: FakeUpstream, name: str
) -> None:
    """The provider's connection drops after 5 events (each arriving on its own, before a pause):
    the same error row and usage so far, and the client's stream ends with the same error event."""
    fast, canonical = servers
    request_id = f"pt-reset-{name}"
    reset = {"stall_after_chunks": 5, "stall_ms": 150, "reset_after_chunks": 5}
    via_canonical = _replay(fake, canonical, name, request_id, **reset)
    via_fast = _replay(fake, fast, name, request_id, **reset)
    fast_row, fast_answer = _stored(fast, request_id)
    assert (fast_row, fast_answer) == _stored(canonical, request_id)
    assert fast_row["status"] == "error" and fast_answer is None
    assert _events(via_fast)[:-1] == _events(body(name))[:5]
    assert _events(via_fast)[-1] == _events(via_canonical)[-1]


def test_a_rewrite_falls_back_to_the_canonical_path(
    servers: tuple[Ensemble, Ensemble], fake: FakeUpstream
) -> None:
    """An OpenAI client that did not ask for the usage chunk cannot take the provider's stream (the
    gateway always asks for it): rendered, the same answer stored."""
    fast, _ = servers
    fake.enqueue("pt-openai", {"stream_body": RECORDINGS["openai_text"][1]})
    with fast.client() as http:
        r = http.post(
            "/v1/chat/completions",
            json={"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
            headers={"x-request-id": "pt-rendered"},
        )
    assert r.status_code == 200 and r.content != body("openai_text")
    assert b'"usage"' not in r.content and b"chatcmpl-pt-rendered" in r.content
    assert log_row(fast, "pt-rendered")["output_tokens"] == 8


def test_official_sdks_read_the_passed_through_streams(
    servers: tuple[Ensemble, Ensemble], fake: FakeUpstream
) -> None:
    fast, canonical = servers
    finals = []
    for server in (fast, canonical):
        fake.enqueue("pt-anthropic", {"stream_body": RECORDINGS["anthropic_thinking_tools"][1]})
        with (
            anthropic.Anthropic(base_url=server.url, api_key=server.key, max_retries=0) as claude,
            claude.messages.stream(
                model=MODELS["anthropic"], max_tokens=500, messages=[{"role": "user", "content": "Weather?"}]
            ) as stream,
        ):
            finals.append(stream.get_final_message())
    fast_final, canonical_final = (m.model_dump(exclude={"id", "model"}) for m in finals)
    assert fast_final == canonical_final
    assert [b.type for b in finals[0].content] == ["thinking", "text", "tool_use", "tool_use"]
    assert finals[0].content[2].input == {"city": "Paris"}  # type: ignore[union-attr]

    calls = []
    for server in (fast, canonical):
        fake.enqueue("pt-openai", {"stream_body": RECORDINGS["openai_tools"][1]})
        with openai.OpenAI(base_url=server.url + "/v1", api_key=server.key, max_retries=0) as gpt:
            stream = gpt.chat.completions.create(
                model=MODELS["openai"],
                messages=[{"role": "user", "content": "Weather?"}],
                stream=True,
                stream_options={"include_usage": True},
            )
            args: dict[int, str] = {}
            usage = None
            for chunk in stream:
                usage = chunk.usage or usage
                for choice in chunk.choices:
                    for call in choice.delta.tool_calls or ():
                        args[call.index] = args.get(call.index, "") + (call.function.arguments or "")  # type: ignore[union-attr]
            assert usage is not None
            calls.append((args, usage.prompt_tokens, usage.completion_tokens))
    assert calls[0] == calls[1] == ({0: '{"city": "Paris", "unit": "°C"}', 1: '{"tz": "CET"}'}, 40, 22)
