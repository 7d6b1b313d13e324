"""Anthropic wire format, checked with the official ``anthropic`` SDK."""

from __future__ import annotations

import anthropic
import httpx
import pytest

from support.waiting import wait_until

from .conftest import Fake, track

pytestmark = pytest.mark.integration

TOOL = {
    "name": "get_weather",
    "description": "weather",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "number"}},
        "required": ["city", "days"],
    },
}
MESSAGES = [{"role": "user", "content": "Hello Claude, tell me about the sea"}]


def dump(blocks: object) -> list[dict[str, object]]:
    return [b.model_dump(exclude={"parsed_output"}) for b in blocks]  # type: ignore[attr-defined]


def client(fake: Fake, prefix: str = "", **kw: object) -> anthropic.Anthropic:
    return track(
        anthropic.Anthropic(base_url=f"{fake.url}{prefix}", api_key="sk-ant-test", max_retries=0, **kw)
    )  # type: ignore[arg-type]


def test_create_text(fake: Fake) -> None:
    m = client(fake).messages.create(
        model="claude-haiku-4-5",
        max_tokens=100,
        messages=MESSAGES,  # type: ignore[arg-type]
        system="You are terse.",
    )
    assert m.type == "message" and m.role == "assistant" and m.id.startswith("msg_")
    assert m.model == "claude-haiku-4-5" and m.stop_reason == "end_turn"
    (block,) = m.content
    assert block.type == "text" and block.text.startswith("Hello from fake-anthropic. You said: Hello Claude")
    chars = len("You are terse.") + len(MESSAGES[0]["content"])
    assert m.usage.input_tokens == -(-chars // 4) and m.usage.output_tokens == 20
    assert m.usage.cache_read_input_tokens == 0 and m.usage.cache_creation_input_tokens == 0


def test_stream_text_matches_json(fake: Fake) -> None:
    fake.config(cached_tokens=5, cache_creation_tokens=9)
    c = client(fake)
    full = c.messages.create(model="claude-haiku-4-5", max_tokens=100, messages=MESSAGES)  # type: ignore[arg-type]
    with c.messages.stream(model="claude-haiku-4-5", max_tokens=100, messages=MESSAGES) as s:  # type: ignore[arg-type]
        texts = list(s.text_stream)
        final = s.get_final_message()
    assert len(texts) == 20
    assert "".join(texts) == full.content[0].text  # type: ignore[union-attr]
    assert (
        dump(final.content) == dump(full.content)
        and final.usage == full.usage
        and final.stop_reason == "end_turn"
    )
    assert final.usage.cache_read_input_tokens == 5 and final.usage.cache_creation_input_tokens == 9
    raw = httpx.post(
        f"{fake.url}/v1/messages",
        headers={"anthropic-version": "2023-06-01"},
        json={"model": "m", "max_tokens": 10, "messages": MESSAGES, "stream": True},
    ).text
    names = [line[7:] for line in raw.split("\n") if line.startswith("event: ")]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]


def test_tool_use(fake: Fake) -> None:
    c = client(fake)
    m = c.messages.create(model="claude-haiku-4-5", max_tokens=100, messages=MESSAGES, tools=[TOOL])  # type: ignore[arg-type,list-item]
    assert m.stop_reason == "tool_use"
    (block,) = m.content
    assert block.type == "tool_use" and block.id.startswith("toolu_") and block.name == "get_weather"
    assert block.input == {"city": "test", "days": 1}
    fragments: list[str] = []
    with c.messages.stream(model="claude-haiku-4-5", max_tokens=100, messages=MESSAGES, tools=[TOOL]) as s:  # type: ignore[arg-type,list-item]
        for event in s:
            if event.type == "content_block_delta" and event.delta.type == "input_json_delta":
                fragments.append(event.delta.partial_json)
        final = s.get_final_message()
    assert len(fragments) >= 3
    assert final.content[0].input == {"city": "test", "days": 1}  # type: ignore[union-attr]
    assert final.stop_reason == "tool_use" and final.usage.output_tokens == len(fragments)
    followup = [
        *MESSAGES,
        {"role": "assistant", "content": [block.model_dump()]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": block.id, "content": "sunny"}]},
    ]
    m2 = c.messages.create(model="claude-haiku-4-5", max_tokens=100, messages=followup, tools=[TOOL])  # type: ignore[arg-type,list-item]
    assert m2.stop_reason == "end_turn" and m2.content[0].type == "text"
    m3 = c.messages.create(
        model="claude-haiku-4-5",
        max_tokens=100,
        messages=MESSAGES,
        tools=[TOOL],  # type: ignore[arg-type,list-item]
        tool_choice={"type": "none"},
    )
    assert m3.content[0].type == "text"


def test_thinking(fake: Fake) -> None:
    fake.config(redacted_thinking=True)
    c = client(fake)
    kw = {
        "model": "claude-haiku-4-5",
        "max_tokens": 2000,
        "messages": MESSAGES,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
    }
    m = c.messages.create(**kw)  # type: ignore[call-overload]
    assert [b.type for b in m.content] == ["thinking", "redacted_thinking", "text"]
    assert m.content[0].thinking and m.content[0].signature
    assert m.usage.output_tokens == 20 + 5  # text pieces + thinking pieces
    thinking: list[str] = []
    with c.messages.stream(**kw) as s:  # type: ignore[arg-type]
        for event in s:
            if event.type == "thinking":
                thinking.append(event.thinking)
        final = s.get_final_message()
    assert "".join(thinking) == m.content[0].thinking
    assert dump(final.content) == dump(m.content) and final.usage == m.usage


def test_max_tokens(fake: Fake) -> None:
    c = client(fake)
    m = c.messages.create(model="claude-haiku-4-5", max_tokens=3, messages=MESSAGES)  # type: ignore[arg-type]
    assert m.stop_reason == "max_tokens" and m.usage.output_tokens == 3
    with c.messages.stream(model="claude-haiku-4-5", max_tokens=3, messages=MESSAGES) as s:  # type: ignore[arg-type]
        final = s.get_final_message()
    assert dump(final.content) == dump(m.content) and final.stop_reason == "max_tokens"


def test_count_tokens(fake: Fake) -> None:
    r = client(fake).messages.count_tokens(model="claude-haiku-4-5", messages=MESSAGES)  # type: ignore[arg-type]
    assert r.input_tokens == -(-len(MESSAGES[0]["content"]) // 4)


def test_errors_and_headers(fake: Fake) -> None:
    c = client(fake)
    fake.enqueue({"status": 529}, {"status": 429, "retry_after": 3}, {"status": 500})
    with pytest.raises(anthropic.APIStatusError) as e:
        c.messages.create(model="claude-haiku-4-5", max_tokens=10, messages=MESSAGES)  # type: ignore[arg-type]
    assert e.value.status_code == 529 and e.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    with pytest.raises(anthropic.RateLimitError) as e2:
        c.messages.create(model="claude-haiku-4-5", max_tokens=10, messages=MESSAGES)  # type: ignore[arg-type]
    assert e2.value.response.headers["retry-after"] == "3"
    assert e2.value.response.headers["anthropic-ratelimit-requests-remaining"] == "0"
    with pytest.raises(anthropic.InternalServerError):
        c.messages.create(model="claude-haiku-4-5", max_tokens=10, messages=MESSAGES)  # type: ignore[arg-type]
    raw = c.messages.with_raw_response.create(model="claude-haiku-4-5", max_tokens=10, messages=MESSAGES)  # type: ignore[arg-type]
    for h in ("requests-limit", "requests-remaining", "requests-reset", "tokens-limit", "tokens-remaining"):
        assert f"anthropic-ratelimit-{h}" in raw.headers
    r = httpx.post(
        f"{fake.url}/v1/messages",
        headers={"anthropic-version": "2023-06-01"},
        json={"model": "m", "messages": MESSAGES},
    )
    assert r.status_code == 400 and r.json()["error"]["message"] == "max_tokens: Field required"
    ok = {"model": "m", "max_tokens": 1, "messages": MESSAGES}
    assert httpx.post(
        f"{fake.url}/v1/messages", json=ok, headers={"anthropic-version": "2023-06-01"}
    ).is_success
    r = httpx.post(f"{fake.url}/v1/messages", json=ok)  # same body, now without the header: not cached
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    assert "anthropic-version" in r.json()["error"]["message"]
    fake.config(require_api_key="sk-ant-right")
    with pytest.raises(anthropic.AuthenticationError):
        c.messages.create(model="claude-haiku-4-5", max_tokens=10, messages=MESSAGES)  # type: ignore[arg-type]


def test_mid_stream_error_event(fake: Fake) -> None:
    fake.enqueue({"error_event_after_chunks": 5})
    got: list[str] = []
    with (
        pytest.raises(anthropic.APIStatusError) as e,
        client(fake).messages.stream(model="claude-haiku-4-5", max_tokens=100, messages=MESSAGES) as s,  # type: ignore[arg-type]
    ):
        got.extend(s.text_stream)
    assert "overloaded_error" in str(e.value) and len(got) == 2


@pytest.mark.parametrize(
    "cfg",
    [
        {"framing": "crlf", "split_bytes": 5},
        {"framing": "cr", "comments": True},
        {"framing": "mixed", "split_bytes": 3, "chunks": 6},
    ],
)
def test_framing_variants(fake: Fake, cfg: dict[str, object]) -> None:
    c = client(fake)
    fake.config(**cfg)  # type: ignore[arg-type]
    full = c.messages.create(model="claude-haiku-4-5", max_tokens=100, messages=MESSAGES)  # type: ignore[arg-type]
    with c.messages.stream(model="claude-haiku-4-5", max_tokens=100, messages=MESSAGES) as s:  # type: ignore[arg-type]
        final = s.get_final_message()
    assert dump(final.content) == dump(full.content)


def test_batches(fake: Fake) -> None:
    fake.config("ep-batch", batch_delay_ms=300)
    c = client(fake, "/ep-batch")
    batch = c.messages.batches.create(
        requests=[
            {
                "custom_id": "a",
                "params": {"model": "claude-haiku-4-5", "max_tokens": 50, "messages": MESSAGES},
            },
            {"custom_id": "b", "params": {"model": "claude-haiku-4-5", "messages": MESSAGES}},  # type: ignore[typeddict-item]
        ]
    )
    assert batch.id.startswith("msgbatch_") and batch.processing_status == "in_progress"
    assert batch.request_counts.processing == 2 and batch.results_url is None
    wait_until(lambda: c.messages.batches.retrieve(batch.id).processing_status == "ended", what="batch ends")
    done = c.messages.batches.retrieve(batch.id)
    assert done.processing_status == "ended" and done.ended_at is not None
    assert done.request_counts.succeeded == 1 and done.request_counts.errored == 1
    assert done.results_url and "/ep-batch/v1/messages/batches/" in done.results_url
    results = {r.custom_id: r.result for r in c.messages.batches.results(batch.id)}
    assert results["a"].type == "succeeded"
    assert results["a"].message.content[0].text.startswith("Hello from fake-anthropic")  # type: ignore[union-attr]
    assert results["b"].type == "errored"
    assert [b.id for b in c.messages.batches.list()] == [batch.id]

    other = c.messages.batches.create(
        requests=[
            {"custom_id": "x", "params": {"model": "claude-haiku-4-5", "max_tokens": 5, "messages": MESSAGES}}
        ]
    )
    canceling = c.messages.batches.cancel(other.id)
    assert canceling.processing_status == "canceling" and canceling.cancel_initiated_at is not None
    ended = c.messages.batches.retrieve(other.id)
    assert ended.processing_status == "ended" and ended.request_counts.canceled == 1
    assert [r.result.type for r in c.messages.batches.results(other.id)] == ["canceled"]
    with pytest.raises(anthropic.NotFoundError):
        c.messages.batches.retrieve("msgbatch_missing")


def test_anthropic_models_list(fake: Fake) -> None:
    assert "claude-haiku-4-5" in [m.id for m in client(fake).models.list()]
