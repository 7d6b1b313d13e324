"""Golden answers through every ingress: the provider answers in tests/fixtures/providers/<type>/
(written from the shapes in the providers' API references and SDK test suites: a Gemini 3 answer
signed on its text, a Gemini function call signed on the call, Claude thinking + redacted thinking
+ a tool call with prompt caching, Claude's web search server tool, OpenAI reasoning with a tool
call, …) are replayed verbatim by the fake upstream, JSON and streamed, and read back through the
native API, OpenAI's, Anthropic's (official SDK) and Gemini's formats. What the provider said must
come through: every text, tool call, thinking text and signature, server-tool block, citation,
usage number and the finish reason, wherever the client's format has a place for it; what a format has no
place for is named in `CARRIES` (docs/formats.md says the same)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import orjson
import pytest

from support.ensemble import Ensemble, fake_provider
from support.fake import FakeUpstream

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "providers"
# provider type → (model, fake endpoint)
PROVIDERS = {
    "anthropic": ("claude-sonnet-4-5", "golden-anthropic"),
    "gemini": ("gemini-3-pro-preview", "golden-gemini"),
    "openai": ("gpt-5", "golden-openai"),
}
CASES = sorted(
    (p.parent.name, p.name.removesuffix(".expected.json"))
    for kind in PROVIDERS
    for p in (FIXTURES / kind).glob("*.expected.json")
)
INGRESSES = ["native", "openai", "anthropic", "gemini"]
# What each client format has a place for (beyond text, tool calls, usage and the finish reason).
CARRIES = {
    "native": {"thinking", "signatures", "redacted", "server_tools", "citations"},
    "anthropic": {"thinking", "signatures", "redacted", "server_tools", "citations"},
    # Gemini parts: thought text and every signature; no redacted thinking or server-tool blocks.
    "gemini": {"thinking", "signatures"},
    # OpenAI: reasoning_content; Gemini's signatures as extra_content.google.thought_signature.
    "openai": {"thinking", "gemini_signatures"},
}
FINISH = {
    "openai": {"stop": "stop", "length": "length", "tool_use": "tool_calls"},
    "anthropic": {"stop": "end_turn", "length": "max_tokens", "tool_use": "tool_use"},
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, fake: FakeUpstream) -> Iterator[Ensemble]:
    providers = [
        fake_provider(kind, fake.endpoint_url(endpoint), [model], pricing={"input": 1.0, "output": 2.0})
        for kind, (model, endpoint) in PROVIDERS.items()
    ]
    ens = Ensemble(Path(tmp_path_factory.mktemp("golden")), providers=providers)
    yield ens
    ens.stop()


def said(expected: dict[str, Any]) -> dict[str, Any]:
    """The facts of a canonical answer that every format must keep (where it has a place)."""
    blocks = expected["blocks"]
    usage = expected["usage"]
    return {
        "text": "".join(b["text"] for b in blocks if b["type"] == "text"),
        "calls": [
            (b["tool_call"]["name"], b["tool_call"]["arguments"]) for b in blocks if b["type"] == "tool_call"
        ],
        "thinking": "".join(b["thinking"] for b in blocks if b["type"] == "thinking"),
        "signatures": [b["signature"] for b in blocks if b["type"] == "thinking" and b["signature"]],
        "gemini_signatures": [
            b["signature"] for b in blocks if b["type"] == "thinking" and b["signature"] and not b["thinking"]
        ],
        "redacted": [b["data"] for b in blocks if b["type"] == "redacted_thinking"],
        "server_tools": [b["block"] for b in blocks if b["type"] == "server_tool"],
        "citations": [c for b in blocks if b["type"] == "text" for c in b.get("citations") or ()],
        "input": usage["input_tokens"],
        "output": usage["output_tokens"],
        "cached": usage["cached_tokens"],
        "finish": expected["finish_reason"],
    }


# -- reading each format's answer back into the same facts ------------------------------------------


def _sse_data(text: str) -> list[dict[str, Any]]:
    return [
        orjson.loads(line[6:])
        for line in text.splitlines()
        if line.startswith("data: ") and line != "data: [DONE]"
    ]


def read_native(server: Ensemble, model: str, stream: bool) -> dict[str, Any]:
    body = {"model": model, "max_tokens": 1000, "messages": [{"role": "user", "content": "golden"}]}
    with server.client() as http:
        if not stream:
            r = http.post("/api/v1/generate", json=body)
            assert r.status_code == 200, r.text
            return facts_of_native(r.json())
        r = http.post("/api/v1/stream", json=body)
    lines = r.text.splitlines()
    done = [orjson.loads(lines[i + 1][6:]) for i, line in enumerate(lines) if line == "event: done"]
    assert len(done) == 1, r.text
    return facts_of_native(done[0])


def facts_of_native(body: dict[str, Any]) -> dict[str, Any]:
    return said(
        {
            "blocks": body["blocks"],
            "usage": {
                "input_tokens": body["input_tokens"],
                "output_tokens": body["output_tokens"],
                "cached_tokens": body["cached_prompt_tokens"],
            },
            "finish_reason": body["finish_reason"],
        }
    )


def read_openai(server: Ensemble, model: str, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "golden"}]}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    with server.client() as http:
        r = http.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    if not stream:
        data = r.json()
        message, usage = data["choices"][0]["message"], data["usage"]
        finish = data["choices"][0]["finish_reason"]
        calls = message.get("tool_calls") or []
        text, thinking = message["content"] or "", message.get("reasoning_content") or ""
        sigs = [c["extra_content"]["google"]["thought_signature"] for c in calls if "extra_content" in c]
        if "extra_content" in message:
            sigs.insert(0, message["extra_content"]["google"]["thought_signature"])
        named = [(c["function"]["name"], orjson.loads(c["function"]["arguments"])) for c in calls]
    else:
        chunks = _sse_data(r.text)
        usage = chunks[-1]["usage"]
        deltas = [c["choices"][0] for c in chunks if c["choices"]]
        finish = next(d["finish_reason"] for d in deltas if d["finish_reason"])
        text = "".join(d["delta"].get("content") or "" for d in deltas)
        thinking = "".join(d["delta"].get("reasoning_content") or "" for d in deltas)
        sigs, starts, args = [], [], {}
        for d in deltas:
            for call in d["delta"].get("tool_calls") or ():
                if "id" in call:
                    starts.append(call["function"]["name"])
                    if "extra_content" in call:
                        sigs.append(call["extra_content"]["google"]["thought_signature"])
                args[call["index"]] = args.get(call["index"], "") + call["function"].get("arguments", "")
            if "extra_content" in d["delta"]:
                sigs.insert(0, d["delta"]["extra_content"]["google"]["thought_signature"])
        named = [(name, orjson.loads(args[i] or "{}")) for i, name in enumerate(starts)]
    return {
        "text": text,
        "calls": named,
        "thinking": thinking,
        "gemini_signatures": sigs,
        "input": usage["prompt_tokens"],
        "output": usage["completion_tokens"],
        "cached": usage["prompt_tokens_details"]["cached_tokens"],
        "finish": {v: k for k, v in FINISH["openai"].items()}[finish],
    }


def read_anthropic(server: Ensemble, model: str, stream: bool) -> dict[str, Any]:
    with anthropic.Anthropic(base_url=server.url, api_key=server.key, max_retries=0) as c:
        args: dict[str, Any] = {
            "model": model,
            "max_tokens": 1000,
            "messages": [{"role": "user", "content": "golden"}],
        }
        if stream:
            with c.messages.stream(**args) as s:
                message = s.get_final_message()
        else:
            message = c.messages.create(**args)
    blocks = [b.model_dump(mode="json", exclude_none=True) for b in message.content]
    u = message.usage
    server_tools = [
        b for b in blocks if b["type"] not in ("text", "thinking", "redacted_thinking", "tool_use")
    ]
    for b in server_tools:  # the SDK's own fields for an absent caller; the provider sent none
        b.pop("caller", None)
    return {
        "text": "".join(b["text"] for b in blocks if b["type"] == "text"),
        "calls": [(b["name"], b["input"]) for b in blocks if b["type"] == "tool_use"],
        "thinking": "".join(b["thinking"] for b in blocks if b["type"] == "thinking"),
        "signatures": [b["signature"] for b in blocks if b["type"] == "thinking" and b["signature"]],
        "redacted": [b["data"] for b in blocks if b["type"] == "redacted_thinking"],
        "server_tools": server_tools,
        "citations": [c for b in blocks if b["type"] == "text" for c in b.get("citations") or ()],
        "input": u.input_tokens + (u.cache_read_input_tokens or 0) + (u.cache_creation_input_tokens or 0),
        "output": u.output_tokens,
        "cached": u.cache_read_input_tokens or 0,
        "finish": {v: k for k, v in FINISH["anthropic"].items()}[message.stop_reason or ""],
    }


def read_gemini(server: Ensemble, model: str, stream: bool) -> dict[str, Any]:
    verb = "streamGenerateContent?alt=sse" if stream else "generateContent"
    body = {"contents": [{"role": "user", "parts": [{"text": "golden"}]}]}
    r = httpx.post(
        f"{server.url}/v1beta/models/{model}:{verb}", headers={"x-goog-api-key": server.key}, json=body
    )
    assert r.status_code == 200, r.text
    chunks = _sse_data(r.text) if stream else [r.json()]
    parts = [p for ch in chunks for p in ch["candidates"][0]["content"]["parts"]]
    usage = chunks[-1]["usageMetadata"]
    finish = chunks[-1]["candidates"][0]["finishReason"]
    calls = [(p["functionCall"]["name"], p["functionCall"]["args"]) for p in parts if "functionCall" in p]
    return {
        "text": "".join(p["text"] for p in parts if "text" in p and not p.get("thought")),
        "calls": calls,
        "thinking": "".join(p["text"] for p in parts if p.get("thought")),
        "signatures": [p["thoughtSignature"] for p in parts if p.get("thoughtSignature")],
        "input": usage["promptTokenCount"],
        "output": usage["candidatesTokenCount"] + usage.get("thoughtsTokenCount", 0),
        "cached": usage.get("cachedContentTokenCount", 0),
        "finish": ("tool_use" if calls else "stop") if finish == "STOP" else {"MAX_TOKENS": "length"}[finish],
    }


READERS = {"native": read_native, "openai": read_openai, "anthropic": read_anthropic, "gemini": read_gemini}
ALWAYS = ("text", "calls", "input", "output", "cached", "finish")


@pytest.mark.parametrize("ingress", INGRESSES)
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize(("provider", "case"), CASES, ids=[f"{p}-{c}" for p, c in CASES])
def test_nothing_the_provider_said_is_lost(
    server: Ensemble, fake: FakeUpstream, provider: str, case: str, stream: bool, ingress: str
) -> None:
    model, endpoint = PROVIDERS[provider]
    expected = said(orjson.loads((FIXTURES / provider / f"{case}.expected.json").read_bytes()))
    if stream:
        fake.enqueue(endpoint, {"stream_body": (FIXTURES / provider / f"{case}.stream.txt").read_text()})
    else:
        fake.enqueue(
            endpoint,
            {"replay_json": orjson.loads((FIXTURES / provider / f"{case}.response.json").read_bytes())},
        )
    got = READERS[ingress](server, model, stream)
    for fact in (*ALWAYS, *sorted(CARRIES[ingress])):
        assert got[fact] == expected[fact], f"{fact} through the {ingress} format"
    if "server_tools" not in CARRIES[ingress]:
        assert expected["server_tools"] == [] or "server_tools" not in got  # left out (and logged)
