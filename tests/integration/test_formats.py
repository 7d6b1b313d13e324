"""Every ingress format against every upstream type, through the fake upstream.

One Ensemble and one fake upstream for the module: `gpt-4o` is served by an OpenAI-type provider,
`claude-sonnet-4-6` by an Anthropic-type one and `gemini-2.5-flash` by a Gemini-type one, each on
its own virtual endpoint of the fake. Clients are the official `anthropic` and `openai` SDKs and
raw HTTP for Gemini's format.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest

from support.ensemble import Ensemble
from support.fake import FakeUpstream
from support.waiting import wait_until

pytestmark = pytest.mark.integration

UPSTREAM_KEY = "sk-test-upstream-key-000000"
# model → (provider type, fake endpoint, the fake's own name in its answers)
MODELS = {
    "gpt-4o": ("openai", "ep-openai", "openai"),
    "claude-sonnet-4-6": ("anthropic", "ep-anthropic", "anthropic"),
    "gemini-2.5-flash": ("gemini", "ep-gemini", "gemini"),
}
PRICING = {"input": 3.0, "output": 15.0, "cache_read": 0.3, "cache_write": 3.75}
WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


# Claude refuses temperature and top_k together with extended thinking; gpt-4o is told to drop logit_bias.
RULES = {
    "enable": True,
    "model_drop_rules": {"gpt-4o": ["logit_bias"]},
    "conditional_rules": {
        "claude*": [{"if_parameter": "thinking", "drop_parameters": ["temperature", "top_k"]}]
    },
}


def _provider(fake: FakeUpstream, model: str) -> dict[str, Any]:
    kind, endpoint, _ = MODELS[model]
    return {
        "name": kind,
        "type": kind,
        "base_url": fake.endpoint_url(endpoint),
        "endpoints": [{"id": f"{kind}-primary", "api_key": UPSTREAM_KEY}],
        "models": [{"name": model, "max_output_tokens": 8192, "pricing": PRICING}],
    }


def _openai_compatible(fake: FakeUpstream) -> list[dict[str, Any]]:
    """xAI and OpenRouter speak OpenAI's format (the fake's OpenAI side answers for them)."""
    return [
        {
            "name": "xai",
            "type": "xai",
            "base_url": fake.endpoint_url("ep-xai"),
            "endpoints": [{"id": "xai-primary", "api_key": UPSTREAM_KEY}],
            "models": [{"name": "grok-3-mini", "pricing": PRICING}],
        },
        {
            "name": "openrouter",
            "type": "openrouter",
            "base_url": fake.endpoint_url("ep-openrouter"),
            "endpoints": [{"id": "openrouter-primary", "api_key": UPSTREAM_KEY}],
            "models": [{"name": "or-claude", "upstream": "anthropic/claude-sonnet-4.5", "pricing": PRICING}],
        },
    ]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, fake: FakeUpstream) -> Iterator[Ensemble]:
    ens = Ensemble(
        Path(tmp_path_factory.mktemp("formats")),
        providers=[_provider(fake, m) for m in MODELS] + _openai_compatible(fake),
        config={"parameter_validation": RULES},
    )
    yield ens
    ens.stop()


@pytest.fixture(autouse=True)
def _fresh(fake: FakeUpstream) -> None:
    fake.reset()
    for _, endpoint, _ in MODELS.values():
        fake.configure(endpoint, chunks=8, require_api_key=UPSTREAM_KEY)


_CLIENTS: list[anthropic.Anthropic | openai.OpenAI] = []


@pytest.fixture(scope="module", autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _CLIENTS:
        _CLIENTS.pop().close()


def claude(server: Ensemble, key: str | None = None) -> anthropic.Anthropic:
    c = anthropic.Anthropic(base_url=server.url, api_key=key or server.key, max_retries=0)
    _CLIENTS.append(c)
    return c


def gpt(server: Ensemble) -> openai.OpenAI:
    c = openai.OpenAI(base_url=server.url + "/v1", api_key=server.key, max_retries=0)
    _CLIENTS.append(c)
    return c


def last_upstream_body(fake: FakeUpstream, model: str) -> dict[str, Any]:
    records = fake.requests(MODELS[model][1])
    assert records, f"no upstream request reached {MODELS[model][1]}"
    body: dict[str, Any] = records[-1]["body"]
    return body


def greeting(model: str) -> str:
    return f"Hello from fake-{MODELS[model][2]}. You said:"


# --- Anthropic format ------------------------------------------------------------------------


@pytest.mark.parametrize("model", list(MODELS))
def test_anthropic_sdk_create_and_stream(server: Ensemble, fake: FakeUpstream, model: str) -> None:
    c = claude(server)
    msg = c.messages.create(
        model=model,
        max_tokens=200,
        system="Be brief.",
        messages=[{"role": "user", "content": "Hello there Claude"}],
    )
    assert msg.type == "message" and msg.role == "assistant" and msg.model == model
    assert msg.stop_reason == "end_turn"
    assert len(msg.content) == 1 and msg.content[0].type == "text"
    text = msg.content[0].text
    assert text.startswith(greeting(model) + " Hello there Claude")
    assert msg.usage.output_tokens == 8 and msg.usage.input_tokens > 0
    sent = last_upstream_body(fake, model)
    if model == "gpt-4o":
        assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
        assert sent["max_completion_tokens"] == 200
    elif model == "gemini-2.5-flash":
        assert sent["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
        assert sent["generationConfig"]["maxOutputTokens"] == 200

    with c.messages.stream(
        model=model,
        max_tokens=200,
        system="Be brief.",
        messages=[{"role": "user", "content": "Hello there Claude"}],
    ) as stream:
        streamed = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert streamed == text
    assert final.content[0].type == "text" and final.content[0].text == text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 8
    assert final.usage.input_tokens == msg.usage.input_tokens


def test_anthropic_stream_event_sequence(server: Ensemble) -> None:
    """The exact wire sequence, for a text answer from an OpenAI-type upstream."""
    body = {
        "model": "gpt-4o",
        "max_tokens": 100,
        "stream": True,
        "messages": [{"role": "user", "content": "hi"}],
    }
    with server.client() as http:
        r = http.post("/v1/messages", json=body, headers={"anthropic-version": "2023-06-01"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = [line[7:] for line in r.text.splitlines() if line.startswith("event: ")]
    assert events[:4] == ["message_start", "ping", "content_block_start", "content_block_delta"]
    assert events[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(events[3:-3]) == {"content_block_delta"}
    datas = [orjson.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
    assert [d["type"] for d in datas] == events  # every event name matches its payload type
    assert datas[-2]["usage"]["output_tokens"] == 8


@pytest.mark.parametrize("model", list(MODELS))
def test_anthropic_sdk_tool_round_trip(server: Ensemble, fake: FakeUpstream, model: str) -> None:
    c = claude(server)
    first = c.messages.create(
        model=model,
        max_tokens=300,
        tools=[WEATHER],  # type: ignore[list-item]
        messages=[{"role": "user", "content": "Weather in Paris?"}],
    )
    assert first.stop_reason == "tool_use"
    uses = [b for b in first.content if b.type == "tool_use"]
    assert len(uses) == 1 and uses[0].name == "get_weather" and uses[0].input == {"city": "test"}
    sent = last_upstream_body(fake, model)
    if model == "gpt-4o":
        assert sent["tools"][0]["function"]["parameters"] == WEATHER["input_schema"]
    elif model == "gemini-2.5-flash":
        decl = sent["tools"][0]["functionDeclarations"][0]
        assert decl["name"] == "get_weather" and decl["parametersJsonSchema"] == WEATHER["input_schema"]

    # Streamed, the same call arrives as input_json_delta fragments.
    with c.messages.stream(
        model=model,
        max_tokens=300,
        tools=[WEATHER],  # type: ignore[list-item]
        messages=[{"role": "user", "content": "Weather in Paris?"}],
    ) as stream:
        kinds = {e.type for e in stream}
        streamed = stream.get_final_message()
    assert "input_json" in kinds
    s_uses = [b for b in streamed.content if b.type == "tool_use"]
    assert len(s_uses) == 1 and s_uses[0].input == {"city": "test"} and streamed.stop_reason == "tool_use"

    second = c.messages.create(
        model=model,
        max_tokens=300,
        tools=[WEATHER],  # type: ignore[list-item]
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": [b.model_dump() for b in first.content]},  # type: ignore[misc]
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": uses[0].id, "content": "sunny, 21C"}],
            },
        ],
    )
    assert second.stop_reason == "end_turn" and second.content[0].type == "text"
    sent = last_upstream_body(fake, model)
    if model == "gpt-4o":
        assert sent["messages"][1]["tool_calls"][0]["id"] == uses[0].id
        assert sent["messages"][2] == {"role": "tool", "tool_call_id": uses[0].id, "content": "sunny, 21C"}
    elif model == "gemini-2.5-flash":
        assert sent["contents"][1]["parts"][0]["functionCall"] == {
            "name": "get_weather",
            "args": {"city": "test"},
        }
        assert sent["contents"][2]["parts"][0]["functionResponse"] == {
            "name": "get_weather",
            "response": {"result": "sunny, 21C"},
        }
    else:
        assert sent["messages"][2]["content"][0]["type"] == "tool_result"


@pytest.mark.parametrize("model", ["claude-sonnet-4-6", "gemini-2.5-flash"])
def test_anthropic_sdk_thinking(server: Ensemble, fake: FakeUpstream, model: str) -> None:
    c = claude(server)
    thinking = {"type": "enabled", "budget_tokens": 1024}
    msg = c.messages.create(
        model=model,
        max_tokens=2000,
        thinking=thinking,  # type: ignore[arg-type]
        messages=[{"role": "user", "content": "Think about cats"}],
    )
    kinds = [b.type for b in msg.content]
    assert kinds == ["thinking", "text"]
    block = msg.content[0]
    assert block.type == "thinking" and block.thinking.startswith("Let me think about this.")
    if model == "claude-sonnet-4-6":
        assert block.signature  # Anthropic signs thinking; it must survive the round trip
        assert last_upstream_body(fake, model)["thinking"] == thinking
    else:
        assert last_upstream_body(fake, model)["generationConfig"]["thinkingConfig"] == {
            "includeThoughts": True,
            "thinkingBudget": 1024,
        }

    with c.messages.stream(
        model=model,
        max_tokens=2000,
        thinking=thinking,  # type: ignore[arg-type]
        messages=[{"role": "user", "content": "Think about cats"}],
    ) as stream:
        deltas = [e.delta.type for e in stream if e.type == "content_block_delta"]
        final = stream.get_final_message()
    assert "thinking_delta" in deltas
    assert [b.type for b in final.content] == kinds
    assert final.content[0].thinking == block.thinking  # type: ignore[union-attr]
    if model == "claude-sonnet-4-6":
        assert "signature_delta" in deltas
        assert final.content[0].signature == block.signature  # type: ignore[union-attr]


def test_anthropic_redacted_thinking_round_trip(server: Ensemble, fake: FakeUpstream) -> None:
    fake.configure("ep-anthropic", redacted_thinking=True)
    c = claude(server)
    thinking = {"type": "enabled", "budget_tokens": 1024}
    msg = c.messages.create(
        model="claude-sonnet-4-6",
        max_tokens=2000,
        thinking=thinking,  # type: ignore[arg-type]
        messages=[{"role": "user", "content": "Secret thoughts"}],
    )
    assert [b.type for b in msg.content] == ["thinking", "redacted_thinking", "text"]
    with c.messages.stream(
        model="claude-sonnet-4-6",
        max_tokens=2000,
        thinking=thinking,  # type: ignore[arg-type]
        messages=[{"role": "user", "content": "Secret thoughts"}],
    ) as stream:
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "redacted_thinking", "text"]
    assert final.content[1].data == msg.content[1].data  # type: ignore[union-attr]
    c.messages.create(
        model="claude-sonnet-4-6",
        max_tokens=2000,
        thinking=thinking,  # type: ignore[arg-type]
        messages=[
            {"role": "user", "content": "Secret thoughts"},
            {"role": "assistant", "content": [b.model_dump() for b in msg.content]},  # type: ignore[misc]
            {"role": "user", "content": "And now?"},
        ],
    )
    echoed = last_upstream_body(fake, "claude-sonnet-4-6")["messages"][1]["content"]
    assert echoed[0] == {
        "type": "thinking",
        "thinking": msg.content[0].thinking,
        "signature": msg.content[0].signature,
    }  # type: ignore[union-attr]
    assert echoed[1] == {"type": "redacted_thinking", "data": msg.content[1].data}  # type: ignore[union-attr]


def test_anthropic_errors_and_count_tokens(server: Ensemble) -> None:
    c = claude(server)
    with pytest.raises(anthropic.BadRequestError) as e:
        c.messages.create(
            model="claude-sonnet-4-6",
            max_tokens=10,
            messages=[{"role": "user", "content": "x"}],
            extra_body={"temperature": 1.5},  # this SDK version types temperature out of create()
        )
    assert e.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert "temperature" in e.value.body["error"]["message"]  # type: ignore[index]
    with pytest.raises(anthropic.AuthenticationError):
        claude(server, "ens_wrong_0000000000000000000000000").messages.create(
            model="gpt-4o", max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
    with pytest.raises(anthropic.NotFoundError):
        c.messages.create(model="no-such-model", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    # A block a provider cannot take is a 400 naming the message, before any upstream call.
    with server.client() as http:
        r = http.post(
            "/v1/messages",
            json={
                "model": "gpt-4o",
                "max_tokens": 10,
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "document", "source": {"type": "url", "url": "https://x/y.pdf"}}
                        ],
                    }
                ],
            },
        )
    assert r.status_code == 400 and r.json()["type"] == "error" and "messages" in r.json()["error"]["message"]
    counted = c.messages.count_tokens(
        model="claude-sonnet-4-6", messages=[{"role": "user", "content": "a" * 400}]
    )
    assert counted.input_tokens == 100


# --- OpenAI format ---------------------------------------------------------------------------

TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": WEATHER["input_schema"],
    },
}


@pytest.mark.parametrize("model", list(MODELS))
def test_openai_sdk_tools_round_trip(server: Ensemble, fake: FakeUpstream, model: str) -> None:
    c = gpt(server)
    first = c.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Weather in Rome?"}],
        tools=[TOOL],  # type: ignore[list-item]
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls or []
    assert len(calls) == 1 and calls[0].function.name == "get_weather"  # type: ignore[union-attr]
    assert orjson.loads(calls[0].function.arguments) == {"city": "test"}  # type: ignore[union-attr]
    if model == "claude-sonnet-4-6":
        sent = last_upstream_body(fake, model)
        assert sent["tools"] == [
            {
                "name": "get_weather",
                "description": "Weather for a city",
                "input_schema": WEATHER["input_schema"],
            }
        ]
        assert sent["max_tokens"] == 4096  # Anthropic requires it; the client sent none

    stream = c.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Weather in Rome?"}],
        tools=[TOOL],  # type: ignore[list-item]
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    args = "".join(
        tc.function.arguments or ""
        for ch in chunks
        if ch.choices
        for tc in ch.choices[0].delta.tool_calls or ()
        if tc.function
    )
    assert orjson.loads(args) == {"city": "test"}
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason] == [
        "tool_calls"
    ]
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == first.usage.total_tokens  # type: ignore[union-attr]

    second = c.chat.completions.create(
        model=model,
        tools=[TOOL],  # type: ignore[list-item]
        messages=[
            {"role": "user", "content": "Weather in Rome?"},
            choice.message.model_dump(exclude_none=True),  # type: ignore[list-item]
            {"role": "tool", "tool_call_id": calls[0].id, "content": '{"sky": "clear"}'},
        ],
    )
    assert second.choices[0].finish_reason == "stop"
    assert (second.choices[0].message.content or "").startswith(greeting(model))
    sent = last_upstream_body(fake, model)
    if model == "claude-sonnet-4-6":
        assert sent["messages"][1]["content"] == [
            {"type": "tool_use", "id": calls[0].id, "name": "get_weather", "input": {"city": "test"}}
        ]
        assert sent["messages"][2]["content"] == [
            {"type": "tool_result", "tool_use_id": calls[0].id, "content": '{"sky": "clear"}'}
        ]
    elif model == "gemini-2.5-flash":
        assert sent["contents"][2]["parts"] == [
            {"functionResponse": {"name": "get_weather", "response": {"sky": "clear"}}}
        ]


def test_openai_sdk_thinking_from_claude(server: Ensemble, fake: FakeUpstream) -> None:
    """OpenAI-format client → Claude with thinking (passed in extra_body); reasoning comes back as
    `reasoning_content`; OpenAI-only extras are not forwarded to Anthropic."""
    r = gpt(server).chat.completions.create(
        model="claude-sonnet-4-6",
        max_tokens=2000,
        messages=[{"role": "user", "content": "Think"}],
        extra_body={"thinking": {"type": "enabled", "budget_tokens": 1024}, "logit_bias": {"1": 1}},
    )
    assert r.choices[0].message.reasoning_content.startswith("Let me think")  # type: ignore[attr-defined]
    sent = last_upstream_body(fake, "claude-sonnet-4-6")
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 1024} and "logit_bias" not in sent


# --- Gemini format ---------------------------------------------------------------------------


def gemini_body(text: str, **extra: Any) -> dict[str, Any]:
    return {"contents": [{"role": "user", "parts": [{"text": text}]}], **extra}


@pytest.mark.parametrize("model", list(MODELS))
def test_gemini_format(server: Ensemble, fake: FakeUpstream, model: str) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        r = http.post(
            f"/v1beta/models/{model}:generateContent",
            params={"key": server.key},
            json=gemini_body("Hello Gemini", generationConfig={"maxOutputTokens": 100}),
        )
        assert r.status_code == 200, r.text
        data = r.json()
        cand = data["candidates"][0]
        text = cand["content"]["parts"][0]["text"]
        assert cand["finishReason"] == "STOP" and cand["content"]["role"] == "model"
        assert text.startswith(greeting(model) + " Hello Gemini")
        usage = data["usageMetadata"]
        assert usage["candidatesTokenCount"] == 8
        assert usage["totalTokenCount"] == usage["promptTokenCount"] + 8

        r = http.post(
            f"/v1beta/models/{model}:streamGenerateContent?alt=sse",
            headers={"x-goog-api-key": server.key},
            json=gemini_body("Hello Gemini", generationConfig={"maxOutputTokens": 100}),
        )
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        chunks = [orjson.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
        streamed = "".join(p.get("text", "") for c in chunks for p in c["candidates"][0]["content"]["parts"])
        assert streamed == text
        assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"
        # Same-format streams pass the provider's own chunks through, which may carry more detail.
        assert usage.items() <= chunks[-1]["usageMetadata"].items()

        # Tool call, as a whole functionCall part, then the function response round trip.
        tools = [
            {
                "functionDeclarations": [
                    {
                        "name": "get_weather",
                        "parameters": {
                            "type": "OBJECT",
                            "properties": {"city": {"type": "STRING"}},
                            "required": ["city"],
                        },
                    }
                ]
            }
        ]
        r = http.post(
            f"/v1beta/models/{model}:generateContent",
            headers={"x-goog-api-key": server.key},
            json=gemini_body("Weather?", tools=tools),
        )
        part = r.json()["candidates"][0]["content"]["parts"][0]
        assert part["functionCall"]["name"] == "get_weather" and part["functionCall"]["args"] == {
            "city": "test"
        }
        if model == "gpt-4o":  # Gemini's capitalised schema types became JSON Schema for OpenAI
            sent = last_upstream_body(fake, model)
            assert sent["tools"][0]["function"]["parameters"]["properties"]["city"] == {"type": "string"}
        r = http.post(
            f"/v1beta/models/{model}:streamGenerateContent?alt=sse",
            headers={"x-goog-api-key": server.key},
            json=gemini_body("Weather?", tools=tools),
        )
        chunks = [orjson.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
        calls = [
            p["functionCall"]
            for c in chunks
            for p in c["candidates"][0]["content"]["parts"]
            if "functionCall" in p
        ]
        assert len(calls) == 1 and calls[0]["args"] == {"city": "test"}
        follow = {
            "contents": [
                {"role": "user", "parts": [{"text": "Weather?"}]},
                {
                    "role": "model",
                    "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "test"}}}],
                },
                {
                    "role": "user",
                    "parts": [{"functionResponse": {"name": "get_weather", "response": {"sky": "clear"}}}],
                },
            ],
            "tools": tools,
        }
        r = http.post(
            f"/v1beta/models/{model}:generateContent", headers={"x-goog-api-key": server.key}, json=follow
        )
        assert r.status_code == 200, r.text
        assert r.json()["candidates"][0]["content"]["parts"][0]["text"].startswith(greeting(model))
        if model == "claude-sonnet-4-6":
            sent = last_upstream_body(fake, model)
            use = sent["messages"][1]["content"][0]
            result = sent["messages"][2]["content"][0]
            assert use["type"] == "tool_use" and result == {
                "type": "tool_result",
                "tool_use_id": use["id"],
                "content": '{"sky":"clear"}',
            }


def test_gemini_errors(server: Ensemble) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        r = http.post("/v1beta/models/gemini-2.5-flash:generateContent", json=gemini_body("x"))
        assert r.status_code == 401 and r.json()["error"]["status"] == "UNAUTHENTICATED"
        r = http.post(
            "/v1beta/models/gemini-2.5-flash:generateContent",
            headers={"x-goog-api-key": server.key},
            json={"contents": []},
        )
        assert r.status_code == 400 and r.json()["error"]["status"] == "INVALID_ARGUMENT"
        assert "contents" in r.json()["error"]["message"]
        r = http.post(
            "/v1beta/models/claude-sonnet-4-6:generateContent",
            headers={"x-goog-api-key": server.key},
            json={"contents": [{"parts": [{"inlineData": {"mimeType": "audio/wav", "data": "UklGRg=="}}]}]},
        )
        assert r.status_code == 400 and "audio" in r.json()["error"]["message"]


# --- usage and cost through the native route ----------------------------------------------------


@pytest.mark.parametrize("model", list(MODELS))
def test_cached_usage_and_exact_cost(server: Ensemble, fake: FakeUpstream, model: str) -> None:
    _, endpoint, _ = MODELS[model]
    fake.configure(endpoint, cached_tokens=1000, cache_creation_tokens=500, reasoning_tokens=7)
    with server.client() as http:
        r = http.post(
            "/api/v1/generate", json={"model": model, "messages": [{"role": "user", "content": "cost me"}]}
        )
    assert r.status_code == 200, r.text
    d = r.json()
    prompt = 2  # "cost me" is 7 characters: ceil(7 / 4) tokens in the fake
    creation = 500 if model == "claude-sonnet-4-6" else 0  # only Anthropic reports cache writes
    assert d["cached_prompt_tokens"] == 1000 and d["cache_creation_tokens"] == creation
    assert d["input_tokens"] == prompt + 1000 + creation
    assert d["output_tokens"] == 8 + 7
    assert d["reasoning_tokens"] == (
        0 if model == "claude-sonnet-4-6" else 7
    )  # Anthropic folds it into output
    expected = (
        prompt * Decimal("3.0") + 1000 * Decimal("0.3") + creation * Decimal("3.75") + 15 * Decimal("15.0")
    ) / 1_000_000
    assert Decimal(d["cost"]) == expected
    assert d["cost_micro_dollars"] == int((expected * 1_000_000).to_integral_value())


def _comparable(response: dict[str, Any]) -> dict[str, Any]:
    """An InferenceResponse without what differs between two calls: ids, timings, rate-limit state."""
    out = {
        k: v
        for k, v in response.items()
        if k not in ("id", "processing_time_ms", "performance", "rate_limit")
    }
    for block in out["blocks"]:
        if block["type"] == "tool_call":
            block["tool_call"]["id"] = "*"
    return out


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("kind", ["text", "tool", "thinking"])
def test_native_stream_and_generate_give_identical_responses(
    server: Ensemble, fake: FakeUpstream, model: str, kind: str
) -> None:
    fake.configure(MODELS[model][1], cached_tokens=64, cache_creation_tokens=16)
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": 2000,
        "messages": [{"role": "user", "content": "Same?"}],
    }
    if kind == "tool":
        body["tools"] = [{"name": "get_weather", "parameters": WEATHER["input_schema"]}]
    if kind == "thinking":
        body["provider_config"] = {"thinking": {"type": "enabled", "budget_tokens": 1024}}
    with server.client() as http:
        whole = http.post("/api/v1/generate", json=body)
        assert whole.status_code == 200, whole.text
        stream = http.post("/api/v1/stream", json=body)
    assert stream.status_code == 200
    lines = stream.text.splitlines()
    done = [orjson.loads(lines[i + 1][6:]) for i, line in enumerate(lines) if line == "event: done"]
    assert len(done) == 1
    assert _comparable(done[0]) == _comparable(whole.json())
    types = [b["type"] for b in whole.json()["blocks"]]
    if kind == "tool":
        assert types == ["tool_call"] and whole.json()["finish_reason"] == "tool_use"
    elif kind == "thinking" and model != "gpt-4o":
        assert types == ["thinking", "text"]
    else:
        assert types == ["text"]


def test_mid_stream_errors_in_each_format(server: Ensemble, fake: FakeUpstream) -> None:
    """A provider error after the stream started ends it with an error in the client's own format."""
    fake.enqueue("ep-gemini", {"error_event_after_chunks": 3})
    with (
        pytest.raises(anthropic.APIStatusError) as e,
        claude(server).messages.stream(
            model="gemini-2.5-flash", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
        ) as stream,
    ):
        for _ in stream:
            pass
    assert "provider stream error" in str(e.value)

    fake.enqueue("ep-anthropic", {"error_event_after_chunks": 3})
    with httpx.Client(base_url=server.url, timeout=30) as http:
        r = http.post(
            "/v1beta/models/claude-sonnet-4-6:streamGenerateContent?alt=sse",
            headers={"x-goog-api-key": server.key},
            json=gemini_body("hi"),
        )
    assert r.status_code == 200 and "data: " in r.text, (r.status_code, r.text)
    last = orjson.loads([line for line in r.text.splitlines() if line.startswith("data: ")][-1][6:])
    # Claude's in-band overloaded_error is an overload for a Gemini client too (not INTERNAL).
    assert last["error"]["code"] == 503 and last["error"]["status"] == "UNAVAILABLE"
    assert "Overloaded" in last["error"]["message"]

    # A 529 before anything was streamed is retryable; with no other endpoint the Anthropic client
    # gets Anthropic's 529 overloaded_error (docs/errors.md). (A short retry-after keeps the
    # endpoint's cool-down from spilling into the next tests.)
    fake.enqueue("ep-anthropic", {"status": 529, "retry_after": 0.05})
    with pytest.raises(anthropic.OverloadedError) as overloaded:
        claude(server).messages.create(
            model="claude-sonnet-4-6", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
        )
    assert overloaded.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    wait_until(lambda: server.provider_health("anthropic") == "healthy", what="ep-anthropic cooled down")


def test_gemini_format_thinking_to_claude(server: Ensemble, fake: FakeUpstream) -> None:
    gen = {
        "maxOutputTokens": 4000,
        "topK": 5,
        "thinkingConfig": {"includeThoughts": True, "thinkingBudget": 2048},
    }
    with httpx.Client(base_url=server.url, timeout=30) as http:
        r = http.post(
            "/v1beta/models/claude-sonnet-4-6:generateContent",
            headers={"x-goog-api-key": server.key},
            json=gemini_body("Ponder", generationConfig=gen, safetySettings=[]),
        )
    assert r.status_code == 200, r.text
    parts = r.json()["candidates"][0]["content"]["parts"]
    assert parts[0]["thought"] is True and parts[1]["text"].startswith(greeting("claude-sonnet-4-6"))
    assert parts[1]["thoughtSignature"]  # as Gemini does: the signature rides on the part after the thoughts
    with httpx.Client(base_url=server.url, timeout=30) as http:
        r = http.post(
            "/v1beta/models/claude-sonnet-4-6:streamGenerateContent?alt=sse",
            headers={"x-goog-api-key": server.key},
            json=gemini_body("Ponder", generationConfig=gen),
        )
    chunks = [orjson.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
    s_parts = [p for c in chunks for p in c["candidates"][0]["content"]["parts"]]
    assert "".join(p["text"] for p in s_parts if p.get("thought")) == parts[0]["text"]
    assert [p["thoughtSignature"] for p in s_parts if "thoughtSignature" in p] == [
        parts[1]["thoughtSignature"]
    ]
    assert "".join(p["text"] for p in s_parts if not p.get("thought")) == parts[1]["text"]
    sent = last_upstream_body(fake, "claude-sonnet-4-6")
    # Anthropic refuses top_k with thinking on (docs/catalogue.md): dropped, the thinking kept.
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 2048} and "top_k" not in sent
    assert "safetySettings" not in sent and "thinkingConfig" not in sent


def test_anthropic_cache_control_and_beta_passthrough(server: Ensemble, fake: FakeUpstream) -> None:
    system = [{"type": "text", "text": "Long shared instructions.", "cache_control": {"type": "ephemeral"}}]
    tool = {**WEATHER, "cache_control": {"type": "ephemeral", "ttl": "1h"}}
    for model in ("claude-sonnet-4-6", "gpt-4o"):
        claude(server).messages.create(
            model=model,
            max_tokens=100,
            system=system,  # type: ignore[arg-type]
            tools=[tool],  # type: ignore[list-item]
            tool_choice={"type": "none"},
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "Cache me", "cache_control": {"type": "ephemeral"}}],
                }
            ],
            extra_headers={"anthropic-beta": "extended-cache-ttl-2025-04-11"},
        )
        record = fake.requests(MODELS[model][1])[-1]
        if model == "claude-sonnet-4-6":
            sent = record["body"]
            assert sent["system"] == system
            assert sent["tools"][0]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
            assert sent["tool_choice"] == {"type": "none"}
            assert sent["messages"][0]["content"][0]["cache_control"] == {"type": "ephemeral"}
            assert record["headers"]["anthropic-beta"] == "extended-cache-ttl-2025-04-11"
        else:
            assert "cache_control" not in orjson.dumps(record["body"]).decode()
            assert "anthropic-beta" not in record["headers"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {"anthropic_beta": "tools-2024\r\nx-injected: 1"}),
        ("/v1/chat/completions", {"anthropic_beta": ["ok", "bad\nx-injected: 1"]}),
        ("/api/v1/generate", {"providerConfig": {"anthropic_beta": "bad\rvalue"}}),
    ],
)
def test_line_break_in_a_forwarded_header_is_a_400(
    server: Ensemble, fake: FakeUpstream, path: str, body: dict[str, Any]
) -> None:
    """A CR/LF in a value bound for an upstream header is the client's mistake: 400 naming the
    field, and nothing reaches the provider (it used to be a 502 from the upstream client)."""
    before = len(fake.requests("ep-anthropic"))
    request = {"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "x"}], **body}
    with server.client() as http:
        r = http.post(path, json=request)
    assert r.status_code == 400, r.text
    assert "anthropic_beta" in r.json()["error"]["message"]
    assert len(fake.requests("ep-anthropic")) == before


def test_openai_sdk_streams_claude_reasoning(server: Ensemble) -> None:
    chunks = list(
        gpt(server).chat.completions.create(
            model="claude-sonnet-4-6",
            max_tokens=2000,
            messages=[{"role": "user", "content": "Think"}],
            stream=True,
            extra_body={"thinking": {"type": "enabled", "budget_tokens": 1024}},
        )
    )
    reasoning = "".join(
        getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in chunks if c.choices
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert reasoning.startswith("Let me think") and text.startswith(greeting("claude-sonnet-4-6"))


@pytest.mark.parametrize("model", ["gpt-4o", "claude-sonnet-4-6"])
def test_google_genai_sdk(server: Ensemble, model: str) -> None:
    from google import genai
    from google.genai import types

    c = genai.Client(
        api_key=server.key,
        http_options=types.HttpOptions(base_url=server.url, retry_options=types.HttpRetryOptions(attempts=1)),
    )
    try:
        r = c.models.generate_content(model=model, contents="Hello from genai")
        assert (r.text or "").startswith(greeting(model) + " Hello from genai")
        assert r.usage_metadata is not None and r.usage_metadata.candidates_token_count == 8
        streamed = "".join(
            ch.text or "" for ch in c.models.generate_content_stream(model=model, contents="Hello from genai")
        )
        assert streamed == r.text
        weather = types.FunctionDeclaration(
            name="get_weather", parameters_json_schema=WEATHER["input_schema"]
        )
        r = c.models.generate_content(
            model=model,
            contents="Weather?",
            config=types.GenerateContentConfig(
                tools=[types.Tool(function_declarations=[weather])],
                automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
            ),
        )
        calls = r.function_calls or []
        assert len(calls) == 1 and calls[0].name == "get_weather" and calls[0].args == {"city": "test"}
    finally:
        c.close()


PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="


@pytest.mark.parametrize("model", list(MODELS))
def test_images_are_mapped_per_provider(server: Ensemble, fake: FakeUpstream, model: str) -> None:
    content = [
        {"type": "text", "text": "What is this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
    ]
    with server.client() as http:
        r = http.post(
            "/api/v1/generate", json={"model": model, "messages": [{"role": "user", "content": content}]}
        )
    assert r.status_code == 200, r.text
    sent = last_upstream_body(fake, model)
    if model == "gpt-4o":
        assert sent["messages"][0]["content"][1] == {
            "type": "image_url",
            "image_url": {"url": f"data:image/png;base64,{PNG}"},
        }
    elif model == "claude-sonnet-4-6":
        assert sent["messages"][0]["content"][1] == {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": PNG},
        }
    else:
        assert sent["contents"][0]["parts"][1] == {"inlineData": {"mimeType": "image/png", "data": PNG}}


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/messages", {"model": "gpt-4o", "messages": []}, "max_tokens"),
        (
            "/v1/messages",
            {"model": "gpt-4o", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]},
            "messages[0].role",
        ),
        (
            "/v1/messages",
            {
                "model": "gpt-4o",
                "max_tokens": 5,
                "messages": [
                    {"role": "user", "content": [{"type": "tool_use", "id": "a", "name": "b", "input": {}}]}
                ],
            },
            "messages[0].content[0]",
        ),
        (
            "/v1/messages",
            {
                "model": "gpt-4o",
                "max_tokens": 5,
                "tool_choice": {"type": "maybe"},
                "messages": [{"role": "user", "content": "x"}],
            },
            "tool_choice.type",
        ),
        (
            "/v1/messages",
            {"model": "gpt-4o", "max_tokens": "five", "messages": [{"role": "user", "content": "x"}]},
            "max_tokens",
        ),
        (
            "/v1/messages",
            {"model": "gpt-4o", "max_tokens": 5, "bogus": 1, "messages": [{"role": "user", "content": "x"}]},
            "bogus",
        ),
        (
            "/v1/messages",
            {
                "model": "claude-sonnet-4-6",
                "max_tokens": 5,
                "top_k": -1,
                "messages": [{"role": "user", "content": "x"}],
            },
            "top_k",
        ),
        (
            "/v1beta/models/gpt-4o:generateContent",
            {"contents": [{"role": "robot", "parts": [{"text": "x"}]}]},
            "contents[0].role",
        ),
        (
            "/v1beta/models/gpt-4o:generateContent",
            {"contents": [{"parts": [{"video": 1}]}]},
            "contents[0].parts[0]",
        ),
        (
            "/v1beta/models/gpt-4o:generateContent",
            {"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"temperature": 9}},
            "temperature",
        ),
        (
            "/v1beta/models/gpt-4o:generateContent",
            {"contents": [{"parts": [{"text": "x"}]}], "tools": [{"googleSearch": {}}]},
            "tools[0].googleSearch",
        ),
    ],
)
def test_bad_input_is_a_400_naming_the_field(
    server: Ensemble, path: str, body: dict[str, Any], field: str
) -> None:
    with server.client() as http:
        r = http.post(path, json=body, headers={"x-goog-api-key": server.key})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert field in err["message"]
    if path.startswith("/v1beta"):
        assert err["status"] == "INVALID_ARGUMENT"
    else:
        assert r.json()["type"] == "error" and err["type"] == "invalid_request_error"


def test_reasoning_effort_and_parallel_tool_calls_translate(server: Ensemble, fake: FakeUpstream) -> None:
    """OpenAI's reasoning_effort becomes a thinking budget for Claude and Gemini; Anthropic's
    disable_parallel_tool_use is OpenAI's parallel_tool_calls=false and back."""
    c = gpt(server)
    c.chat.completions.create(
        model="claude-sonnet-4-6",
        max_tokens=3000,
        reasoning_effort="low",
        messages=[{"role": "user", "content": "hm"}],
    )
    assert last_upstream_body(fake, "claude-sonnet-4-6")["thinking"] == {
        "type": "enabled",
        "budget_tokens": 2048,
    }
    r = c.chat.completions.create(
        model="gemini-2.5-flash", reasoning_effort="medium", messages=[{"role": "user", "content": "hm"}]
    )
    assert last_upstream_body(fake, "gemini-2.5-flash")["generationConfig"]["thinkingConfig"] == {
        "includeThoughts": True,
        "thinkingBudget": 8192,
    }
    assert r.choices[0].message.reasoning_content.startswith("Let me think")  # type: ignore[attr-defined]

    c.chat.completions.create(
        model="claude-sonnet-4-6",
        tools=[TOOL],  # type: ignore[list-item]
        parallel_tool_calls=False,
        messages=[{"role": "user", "content": "hm"}],
    )
    assert last_upstream_body(fake, "claude-sonnet-4-6")["tool_choice"] == {
        "type": "auto",
        "disable_parallel_tool_use": True,
    }
    claude(server).messages.create(
        model="gpt-4o",
        max_tokens=100,
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice={"type": "auto", "disable_parallel_tool_use": True},
        messages=[{"role": "user", "content": "hm"}],
    )
    sent = last_upstream_body(fake, "gpt-4o")
    assert sent["parallel_tool_calls"] is False and sent["tool_choice"] == "auto"


def test_native_stream_carries_redacted_thinking(server: Ensemble, fake: FakeUpstream) -> None:
    fake.configure("ep-anthropic", redacted_thinking=True)
    body = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 2000,
        "messages": [{"role": "user", "content": "secret"}],
        "provider_config": {"thinking": {"type": "enabled", "budget_tokens": 1024}},
    }
    with server.client() as http:
        r = http.post("/api/v1/stream", json=body)
    frames = [orjson.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
    redacted = [f for f in frames if f.get("type") == "redacted_thinking"]
    assert len(redacted) == 1 and redacted[0]["index"] == 1 and redacted[0]["data"]
    done = frames[-1]
    assert [b["type"] for b in done["blocks"]] == ["thinking", "redacted_thinking", "text"]
    assert done["blocks"][1]["data"] == redacted[0]["data"]


def test_gemini_json_array_stream_and_count_tokens_model(server: Ensemble) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        whole = http.post(
            "/v1beta/models/claude-sonnet-4-6:generateContent",
            headers={"x-goog-api-key": server.key},
            json=gemini_body("array please"),
        ).json()
        r = http.post(
            "/v1/models/claude-sonnet-4-6:streamGenerateContent",  # no alt=sse: one streamed JSON array
            headers={"x-goog-api-key": server.key},
            json=gemini_body("array please"),
        )
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
        chunks = r.json()
        assert isinstance(chunks, list) and len(chunks) > 1
        text = "".join(p.get("text", "") for c in chunks for p in c["candidates"][0]["content"]["parts"])
        assert text == whole["candidates"][0]["content"]["parts"][0]["text"]
        assert chunks[-1]["usageMetadata"] == whole["usageMetadata"]
        r = http.post(
            "/v1/messages/count_tokens",
            headers={"x-api-key": server.key},
            json={"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]},
        )
        assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"


def test_drop_rules_reach_provider_specific_parameters(server: Ensemble, fake: FakeUpstream) -> None:
    claude(server).messages.create(
        model="claude-sonnet-4-6",
        max_tokens=2000,
        thinking={"type": "enabled", "budget_tokens": 1024},
        messages=[{"role": "user", "content": "x"}],
        extra_body={"temperature": 0.5, "top_k": 5},  # this SDK version types both out of create()
    )
    sent = last_upstream_body(fake, "claude-sonnet-4-6")
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    assert "temperature" not in sent and "top_k" not in sent
    claude(server).messages.create(
        model="claude-sonnet-4-6",
        max_tokens=20,
        messages=[{"role": "user", "content": "x"}],
        extra_body={"temperature": 0.5, "top_k": 5},
    )
    sent = last_upstream_body(fake, "claude-sonnet-4-6")  # no thinking: nothing dropped
    assert sent["temperature"] == 0.5 and sent["top_k"] == 5
    gpt(server).chat.completions.create(
        model="gpt-4o", logit_bias={"50256": -100}, seed=7, messages=[{"role": "user", "content": "x"}]
    )
    sent = last_upstream_body(fake, "gpt-4o")
    assert "logit_bias" not in sent and sent["seed"] == 7


def test_gemini_thought_signature_round_trip(server: Ensemble, fake: FakeUpstream) -> None:
    """A thoughtSignature on a Gemini-format client's functionCall part reaches a Gemini upstream on
    the same call; from an Anthropic-format client it travels as the thinking block's signature."""
    follow = {
        "contents": [
            {"role": "user", "parts": [{"text": "Weather?"}]},
            {
                "role": "model",
                "parts": [
                    {
                        "functionCall": {"name": "get_weather", "args": {"city": "Oslo"}},
                        "thoughtSignature": "c2lnLTE=",
                    }
                ],
            },
            {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"t": 3}}}]},
        ]
    }
    with httpx.Client(base_url=server.url, timeout=30) as http:
        r = http.post(
            "/v1beta/models/gemini-2.5-flash:generateContent",
            headers={"x-goog-api-key": server.key},
            json=follow,
        )
    assert r.status_code == 200, r.text
    sent = last_upstream_body(fake, "gemini-2.5-flash")
    assert sent["contents"][1]["parts"] == [
        {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}, "thoughtSignature": "c2lnLTE="}
    ]
    claude(server).messages.create(
        model="gemini-2.5-flash",
        max_tokens=100,
        tools=[WEATHER],  # type: ignore[list-item]
        messages=[
            {"role": "user", "content": "Weather?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "", "signature": "c2lnLTI="},
                    {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Oslo"}},
                ],
            },
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": "3C"}]},
        ],
    )
    sent = last_upstream_body(fake, "gemini-2.5-flash")
    assert sent["contents"][1]["parts"][0]["thoughtSignature"] == "c2lnLTI="


def test_xai_and_openrouter(server: Ensemble, fake: FakeUpstream) -> None:
    for endpoint in ("ep-xai", "ep-openrouter"):
        fake.configure(endpoint, chunks=8, require_api_key=UPSTREAM_KEY, reasoning_tokens=5, cached_tokens=3)
    msg = claude(server).messages.create(
        model="grok-3-mini",
        max_tokens=50,
        thinking={"type": "enabled", "budget_tokens": 1024},
        messages=[{"role": "user", "content": "hi grok"}],
    )
    assert msg.content[0].type == "text" and msg.usage.output_tokens == 8 + 5
    sent = last_upstream_body_at(fake, "ep-xai")
    assert sent["max_tokens"] == 50 and "max_completion_tokens" not in sent and "thinking" not in sent
    with server.client() as http:
        r = http.post(
            "/api/v1/generate", json={"model": "or-claude", "messages": [{"role": "user", "content": "hi"}]}
        )
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["provider"] == "openrouter" and d["cached_prompt_tokens"] == 3 and d["reasoning_tokens"] == 5
    record = fake.requests("ep-openrouter")[-1]
    assert record["body"]["model"] == "anthropic/claude-sonnet-4.5"  # the provider-prefixed id upstream
    assert record["headers"]["x-title"] == "Ensemble"
    # No usage.cost from this upstream: the price list prices it, exactly.
    expected = (
        (d["input_tokens"] - 3) * Decimal("3.0") + 3 * Decimal("0.3") + 13 * Decimal("15.0")
    ) / 1_000_000
    assert Decimal(d["cost"]) == expected


def last_upstream_body_at(fake: FakeUpstream, endpoint: str) -> dict[str, Any]:
    body: dict[str, Any] = fake.requests(endpoint)[-1]["body"]
    return body


@pytest.mark.parametrize("model", list(MODELS))
def test_tool_error_results(server: Ensemble, fake: FakeUpstream, model: str) -> None:
    claude(server).messages.create(
        model=model,
        max_tokens=100,
        tools=[WEATHER],  # type: ignore[list-item]
        messages=[
            {"role": "user", "content": "Weather?"},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "call_9", "name": "get_weather", "input": {}}],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "call_9",
                        "content": "no such city",
                        "is_error": True,
                    }
                ],
            },
        ],
    )
    sent = last_upstream_body(fake, model)
    if model == "gpt-4o":
        assert sent["messages"][2] == {
            "role": "tool",
            "tool_call_id": "call_9",
            "content": "Error: no such city",
        }
    elif model == "claude-sonnet-4-6":
        assert sent["messages"][2]["content"] == [
            {"type": "tool_result", "tool_use_id": "call_9", "is_error": True, "content": "no such city"}
        ]
    else:
        assert sent["contents"][2]["parts"] == [
            {"functionResponse": {"name": "get_weather", "response": {"error": "no such city"}}}
        ]


def test_foreign_parameters_do_not_reach_openai(server: Ensemble, fake: FakeUpstream) -> None:
    """Gemini-format settings (camelCase) and Anthropic-only ones never reach an OpenAI-type API."""
    gen = {"topK": 3, "seed": 11, "responseMimeType": "text/plain"}
    with httpx.Client(base_url=server.url, timeout=30) as http:
        r = http.post(
            "/v1beta/models/gpt-4o:generateContent",
            headers={"x-goog-api-key": server.key},
            json=gemini_body("x", generationConfig=gen, safetySettings=[]),
        )
    assert r.status_code == 200, r.text
    sent = last_upstream_body(fake, "gpt-4o")
    assert not [k for k in sent if any(c.isupper() for c in k)]
    claude(server).messages.create(
        model="gpt-4o",
        max_tokens=20,
        messages=[{"role": "user", "content": "x"}],
        metadata={"user_id": "u-1"},
        extra_body={"top_k": 4},
        output_config={"effort": "low"},  # type: ignore[typeddict-item]
    )
    sent = last_upstream_body(fake, "gpt-4o")
    assert "top_k" not in sent and "output_config" not in sent and sent["metadata"] == {"user_id": "u-1"}
