"""Gemini wire format, checked with the official ``google-genai`` SDK and raw HTTP."""

from __future__ import annotations

import json
import re

import httpx
import pytest
from google import genai
from google.genai import errors, types

from .conftest import Fake, track

pytestmark = pytest.mark.integration

PROMPT = "Hello Gemini, how is the weather today?"
WEATHER = types.FunctionDeclaration(
    name="get_weather",
    parameters_json_schema={
        "type": "object",
        "properties": {"city": {"type": "string"}, "n": {"type": "integer"}},
        "required": ["city", "n"],
    },
)


def client(fake: Fake, prefix: str = "/ep-g", key: str = "g-key") -> genai.Client:
    return track(
        genai.Client(
            api_key=key,
            http_options=types.HttpOptions(
                base_url=f"{fake.url}{prefix}", retry_options=types.HttpRetryOptions(attempts=1)
            ),
        )
    )


def test_generate_and_stream(fake: Fake) -> None:
    fake.config("ep-g", cached_tokens=4, reasoning_tokens=6)
    c = client(fake)
    r = c.models.generate_content(model="gemini-2.5-flash", contents=PROMPT)
    assert r.text is not None and r.text.startswith("Hello from fake-gemini. You said: Hello Gemini, how")
    cand = r.candidates[0]  # type: ignore[index]
    assert cand.finish_reason == types.FinishReason.STOP and cand.content.role == "model"  # type: ignore[union-attr]
    u = r.usage_metadata
    prompt = -(-len(PROMPT) // 4) + 4
    assert u is not None and u.prompt_token_count == prompt and u.candidates_token_count == 20
    assert u.cached_content_token_count == 4 and u.thoughts_token_count == 6
    assert u.total_token_count == prompt + 20 + 6
    assert r.model_version == "gemini-2.5-flash"
    chunks = list(c.models.generate_content_stream(model="gemini-2.5-flash", contents=PROMPT))
    assert len(chunks) == 20
    assert "".join(ch.text or "" for ch in chunks) == r.text
    assert chunks[-1].usage_metadata == u
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP  # type: ignore[index]
    assert chunks[0].candidates[0].finish_reason is None  # type: ignore[index]


def test_function_call(fake: Fake) -> None:
    c = client(fake)
    cfg = types.GenerateContentConfig(
        tools=[types.Tool(function_declarations=[WEATHER])],
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
    )
    r = c.models.generate_content(model="gemini-2.5-flash", contents=PROMPT, config=cfg)
    (call,) = r.function_calls or []
    assert call.name == "get_weather" and call.args == {"city": "test", "n": 1}
    streamed = [
        fc
        for ch in c.models.generate_content_stream(model="gemini-2.5-flash", contents=PROMPT, config=cfg)
        for fc in ch.function_calls or []
    ]
    assert [(fc.name, fc.args) for fc in streamed] == [("get_weather", {"city": "test", "n": 1})]
    history = [
        types.Content(role="user", parts=[types.Part(text=PROMPT)]),
        types.Content(role="model", parts=[types.Part(function_call=call)]),
        types.Content(
            role="user", parts=[types.Part.from_function_response(name="get_weather", response={"temp": 20})]
        ),
    ]
    r2 = c.models.generate_content(model="gemini-2.5-flash", contents=history, config=cfg)  # type: ignore[arg-type]
    assert r2.function_calls is None and r2.text


def test_thinking_and_max_tokens(fake: Fake) -> None:
    c = client(fake)
    cfg = types.GenerateContentConfig(
        thinking_config=types.ThinkingConfig(include_thoughts=True), max_output_tokens=5
    )
    r = c.models.generate_content(model="gemini-2.5-pro", contents=PROMPT, config=cfg)
    parts = r.candidates[0].content.parts  # type: ignore[index,union-attr]
    assert parts is not None and parts[0].thought is True and parts[0].text
    assert r.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS  # type: ignore[index]
    assert r.usage_metadata is not None and r.usage_metadata.candidates_token_count == 5
    assert r.usage_metadata.thoughts_token_count == 5
    chunks = list(c.models.generate_content_stream(model="gemini-2.5-pro", contents=PROMPT, config=cfg))
    thought = "".join(p.text or "" for ch in chunks for p in ch.candidates[0].content.parts if p.thought)  # type: ignore[index,union-attr]
    assert thought == parts[0].text


def test_errors(fake: Fake) -> None:
    c = client(fake)
    fake.enqueue({"status": 429, "retry_after": 7}, {"status": 503}, endpoint="ep-g")
    with pytest.raises(errors.ClientError) as e:
        c.models.generate_content(model="gemini-2.5-flash", contents=PROMPT)
    assert e.value.code == 429 and e.value.status == "RESOURCE_EXHAUSTED"
    assert e.value.details["error"]["details"][0]["retryDelay"] == "7s"
    with pytest.raises(errors.ServerError) as e2:
        c.models.generate_content(model="gemini-2.5-flash", contents=PROMPT)
    assert e2.value.code == 503 and e2.value.status == "UNAVAILABLE"
    fake.config("ep-g", require_api_key="right")
    with pytest.raises(errors.ClientError) as e3:
        c.models.generate_content(model="gemini-2.5-flash", contents=PROMPT)
    assert e3.value.code == 401
    assert client(fake, key="right").models.generate_content(model="gemini-2.5-flash", contents=PROMPT).text
    url = f"{fake.url}/ep-g/v1beta/models/gemini-2.5-flash:generateContent"
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    assert httpx.post(url, params={"key": "right"}, json=body).status_code == 200
    bad = httpx.post(url, params={"key": "right"}, json={"contents": []})
    assert bad.status_code == 400 and bad.json()["error"]["status"] == "INVALID_ARGUMENT"


def test_raw_framing(fake: Fake) -> None:
    url = f"{fake.url}/v1beta/models/gemini-2.5-flash:streamGenerateContent"
    body = {
        "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
        "generationConfig": {"maxOutputTokens": 3},
    }
    sse = httpx.post(url, params={"alt": "sse"}, json=body)
    assert sse.headers["content-type"] == "text/event-stream"
    events = sse.content.split(b"\r\n\r\n")
    assert events[-1] == b"" and len(events) == 4 and all(e.startswith(b"data: {") for e in events[:-1])
    arr = httpx.post(url, json=body)
    assert arr.headers["content-type"].startswith("application/json")
    items = json.loads(arr.content)
    assert len(items) == 3 and items[-1]["candidates"][0]["finishReason"] == "MAX_TOKENS"
    assert items[-1]["usageMetadata"]["candidatesTokenCount"] == 3
    fake.config(framing="lf", split_bytes=16)
    lf = httpx.post(url, params={"alt": "sse"}, json=body).content

    def no_ids(b: bytes) -> bytes:
        return re.sub(rb'"responseId":"\w+"', b"", b)

    assert no_ids(lf) == no_ids(sse.content.replace(b"\r\n", b"\n"))
    fake.config(framing="mixed", split_bytes=3, chunks=4)
    c = client(fake, prefix="")  # keep a reference: a collected client closes its HTTP pool
    text = "".join(
        ch.text or "" for ch in c.models.generate_content_stream(model="gemini-2.5-flash", contents="hi")
    )
    assert text.startswith("Hello from fake-gemini. You said: hi")


def test_mid_stream_error_event(fake: Fake) -> None:
    fake.enqueue({"error_event_after_chunks": 2})
    url = f"{fake.url}/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    raw = httpx.post(url, json={"contents": [{"parts": [{"text": "hi"}]}]}).content
    events = [e for e in raw.split(b"\r\n\r\n") if e]
    assert len(events) == 3 and json.loads(events[-1][6:])["error"]["code"] == 500
