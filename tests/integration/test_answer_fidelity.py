"""What the provider meant reaches every client format, and what the client hands back reaches the
provider: upstream overloads stay overloads (Anthropic 529 `overloaded_error`, OpenAI 503, Gemini
`UNAVAILABLE`), Gemini 3 thought signatures survive a round trip through each format, Anthropic
server-tool blocks stay server-tool blocks, and Claude Code's mid-conversation `role: "system"`
turns are kept in place for Claude models that take them and translated for the others. Official
SDKs as clients; the fake upstream plays the providers and records what they were sent."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest

from support.ensemble import Ensemble, fake_provider
from support.fake import FakeUpstream
from support.waiting import wait_until

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "providers"
PRICING = {"input": 1.0, "output": 2.0}
ENDPOINTS = {"anthropic": "fid-anthropic", "gemini": "fid-gemini", "openai": "fid-openai"}
MODELS = {
    "anthropic": ["claude-opus-4-8", "claude-sonnet-4-5"],
    "gemini": ["gemini-3-pro-preview"],
    "openai": ["gpt-4o"],
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, fake: FakeUpstream) -> Iterator[Ensemble]:
    providers = [
        fake_provider(kind, fake.endpoint_url(ENDPOINTS[kind]), models, pricing=PRICING)
        for kind, models in MODELS.items()
    ]
    ens = Ensemble(Path(tmp_path_factory.mktemp("fidelity")), providers=providers)
    yield ens
    ens.stop()


@pytest.fixture(autouse=True)
def _fresh(fake: FakeUpstream) -> None:
    fake.reset()
    for endpoint in ENDPOINTS.values():
        fake.configure(endpoint, chunks=6)


def claude(server: Ensemble) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key=server.key, max_retries=0)


def gpt(server: Ensemble) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=server.key, max_retries=0)


def sent(fake: FakeUpstream, kind: str) -> dict[str, Any]:
    """The body of the last request the provider `kind` received."""
    body: dict[str, Any] = fake.requests(ENDPOINTS[kind])[-1]["body"]
    return body


def replay_json(fake: FakeUpstream, kind: str, case: str) -> None:
    fake.enqueue(
        ENDPOINTS[kind],
        {"replay_json": orjson.loads((FIXTURES / kind / f"{case}.response.json").read_bytes())},
    )


def gemini_post(
    server: Ensemble, model: str, body: dict[str, Any], verb: str = "generateContent"
) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v1beta/models/{model}:{verb}",
        headers={"x-goog-api-key": server.key},
        json=body,
        timeout=30,
    )


USER = [{"role": "user", "content": "hi"}]


# -- 1. overloads stay overloads ---------------------------------------------------------------------


def _cooled(server: Ensemble, provider: str) -> None:
    wait_until(lambda: server.provider_health(provider) == "healthy", what=f"{provider} cooled down")


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_claude_overloaded_before_the_answer_in_every_format(
    server: Ensemble, fake: FakeUpstream, stream: bool
) -> None:
    overloaded = {"status": 529, "retry_after": 0.05}
    model = "claude-sonnet-4-5"

    fake.enqueue(ENDPOINTS["anthropic"], overloaded)
    with claude(server) as c, pytest.raises(anthropic.OverloadedError) as a:
        if stream:
            with c.messages.stream(model=model, max_tokens=50, messages=USER) as s:
                s.get_final_message()
        else:
            c.messages.create(model=model, max_tokens=50, messages=USER)
    assert a.value.status_code == 529 and a.value.body["error"]["type"] == "overloaded_error"
    assert a.value.response.headers["retry-after"] == "1"
    _cooled(server, "anthropic")

    fake.enqueue(ENDPOINTS["anthropic"], overloaded)
    with gpt(server) as o, pytest.raises(openai.InternalServerError) as e:
        o.chat.completions.create(model=model, messages=USER, stream=stream)
    assert e.value.status_code == 503 and e.value.body["type"] == "server_error"
    _cooled(server, "anthropic")

    fake.enqueue(ENDPOINTS["anthropic"], overloaded)
    verb = "streamGenerateContent?alt=sse" if stream else "generateContent"
    r = gemini_post(server, model, {"contents": [{"parts": [{"text": "hi"}]}]}, verb)
    assert r.status_code == 503 and r.json()["error"]["status"] == "UNAVAILABLE", r.text
    _cooled(server, "anthropic")

    fake.enqueue(ENDPOINTS["anthropic"], overloaded)
    with server.client() as http:
        r = http.post(
            "/api/v1/stream" if stream else "/api/v1/generate", json={"model": model, "messages": USER}
        )
    assert r.status_code == 503 and r.json()["error"]["type"] == "overloaded", r.text
    _cooled(server, "anthropic")


def test_claude_overloaded_mid_stream_is_in_band_in_every_format(
    server: Ensemble, fake: FakeUpstream
) -> None:
    model = "claude-sonnet-4-5"
    mid = {"error_event_after_chunks": 4}  # message_start, ping, a block: then overloaded_error

    fake.enqueue(ENDPOINTS["anthropic"], mid)
    with (
        claude(server) as c,
        pytest.raises(anthropic.APIStatusError) as a,
        c.messages.stream(model=model, max_tokens=50, messages=USER) as s,
    ):
        for _ in s:
            pass
    assert a.value.body["error"]["type"] == "overloaded_error"

    fake.enqueue(ENDPOINTS["anthropic"], mid)
    with server.client() as http:
        r = http.post("/v1/chat/completions", json={"model": model, "messages": USER, "stream": True})
    events = [orjson.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
    assert events[-1]["error"]["type"] == "server_error" and "Overloaded" in events[-1]["error"]["message"]

    fake.enqueue(ENDPOINTS["anthropic"], mid)
    with server.client() as http:
        r = http.post("/api/v1/stream", json={"model": model, "messages": USER})
    lines = r.text.splitlines()
    error = orjson.loads(lines[lines.index("event: error") + 1][6:])["error"]
    assert error["type"] == "overloaded" and error["retryable"] is True


def test_an_endpoint_resting_after_an_overload_is_still_overloaded(
    server: Ensemble, fake: FakeUpstream
) -> None:
    """While the endpoint rests for the provider's retry-after, the next caller hears the same reason:
    overloaded (Anthropic's 529), not a rate limit."""
    fake.enqueue(ENDPOINTS["anthropic"], {"status": 529, "retry_after": 2})
    with claude(server) as c:
        for _ in range(2):  # the second never reaches the provider: the endpoint is resting
            with pytest.raises(anthropic.OverloadedError) as e:
                c.messages.create(model="claude-sonnet-4-5", max_tokens=50, messages=USER)
            assert e.value.response.headers["retry-after"] in ("1", "2")
    assert len(fake.requests(ENDPOINTS["anthropic"])) == 1
    _cooled(server, "anthropic")


def test_gemini_unavailable_is_overloaded_for_claude_clients(server: Ensemble, fake: FakeUpstream) -> None:
    fake.enqueue(ENDPOINTS["gemini"], {"status": 503})
    with claude(server) as c, pytest.raises(anthropic.OverloadedError) as a:
        c.messages.create(model="gemini-3-pro-preview", max_tokens=50, messages=USER)
    assert a.value.body["error"]["type"] == "overloaded_error"


# -- 2. Gemini 3 thought signatures round-trip -------------------------------------------------------

TEXT_SIG = orjson.loads((FIXTURES / "gemini" / "text_signature.expected.json").read_bytes())["blocks"][1][
    "signature"
]
CALL_SIG = orjson.loads((FIXTURES / "gemini" / "function_call.expected.json").read_bytes())["blocks"][0][
    "signature"
]


def _model_turn_signatures(fake: FakeUpstream) -> list[str]:
    contents = sent(fake, "gemini")["contents"]
    return [
        p["thoughtSignature"]
        for c in contents
        if c["role"] == "model"
        for p in c["parts"]
        if "thoughtSignature" in p
    ]


def test_text_signature_round_trips_through_gemini_format(server: Ensemble, fake: FakeUpstream) -> None:
    replay_json(fake, "gemini", "text_signature")
    first = {"contents": [{"role": "user", "parts": [{"text": "Capital of France?"}]}]}
    answer = gemini_post(server, "gemini-3-pro-preview", first).json()["candidates"][0]["content"]
    assert [p.get("thoughtSignature") for p in answer["parts"]] == [None, TEXT_SIG]
    assert answer["parts"][0]["text"] == "The capital of France is Paris."
    nxt = {"contents": [*first["contents"], answer, {"role": "user", "parts": [{"text": "And Italy?"}]}]}
    assert gemini_post(server, "gemini-3-pro-preview", nxt).status_code == 200
    assert _model_turn_signatures(fake) == [TEXT_SIG]
    # As the client sent it: the signature on the part it came on, not moved.
    client_signed = {
        **answer,
        "parts": [{"text": "The capital of France is Paris.", "thoughtSignature": TEXT_SIG}],
    }
    gemini_post(
        server, "gemini-3-pro-preview", {"contents": [*first["contents"], client_signed, nxt["contents"][-1]]}
    )
    model_turn = next(c for c in sent(fake, "gemini")["contents"] if c["role"] == "model")
    assert model_turn["parts"] == client_signed["parts"]


def test_text_signature_round_trips_through_anthropic_format(server: Ensemble, fake: FakeUpstream) -> None:
    replay_json(fake, "gemini", "text_signature")
    with claude(server) as c:
        first = c.messages.create(model="gemini-3-pro-preview", max_tokens=100, messages=USER)
        assert [b.type for b in first.content] == ["text", "thinking"]
        assert first.content[1].signature == TEXT_SIG
        c.messages.create(
            model="gemini-3-pro-preview",
            max_tokens=100,
            messages=[
                *USER,
                {"role": "assistant", "content": first.content},
                {"role": "user", "content": "more"},
            ],
        )
    assert _model_turn_signatures(fake) == [TEXT_SIG]


def test_signatures_round_trip_through_openai_format(server: Ensemble, fake: FakeUpstream) -> None:
    replay_json(fake, "gemini", "text_signature")
    with gpt(server) as o:
        first = o.chat.completions.create(model="gemini-3-pro-preview", messages=USER)
        message = first.choices[0].message
        assert message.model_extra is not None
        assert message.model_extra["extra_content"] == {"google": {"thought_signature": TEXT_SIG}}
        o.chat.completions.create(
            model="gemini-3-pro-preview",
            messages=[*USER, message.model_dump(exclude_none=True), {"role": "user", "content": "more"}],
        )
        assert _model_turn_signatures(fake) == [TEXT_SIG]

        replay_json(fake, "gemini", "function_call")  # Gemini 3 refuses a function call without its signature
        tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
        call = o.chat.completions.create(model="gemini-3-pro-preview", messages=USER, tools=tools)
        turn = call.choices[0].message.model_dump(exclude_none=True)
        assert turn["tool_calls"][0]["extra_content"] == {"google": {"thought_signature": CALL_SIG}}
        result = {"role": "tool", "tool_call_id": turn["tool_calls"][0]["id"], "content": '{"temp": 21}'}
        o.chat.completions.create(model="gemini-3-pro-preview", messages=[*USER, turn, result], tools=tools)
    model_turn = next(c for c in sent(fake, "gemini")["contents"] if c["role"] == "model")
    assert model_turn["parts"][0]["functionCall"]["name"] == "get_weather"
    assert model_turn["parts"][0]["thoughtSignature"] == CALL_SIG


def test_streamed_signature_reaches_openai_and_gemini_stream_clients(
    server: Ensemble, fake: FakeUpstream
) -> None:
    stream = (FIXTURES / "gemini" / "text_signature.stream.txt").read_text()
    fake.enqueue(ENDPOINTS["gemini"], {"stream_body": stream})
    with gpt(server) as o:
        chunks = list(o.chat.completions.create(model="gemini-3-pro-preview", messages=USER, stream=True))
    extras = [
        c.choices[0].delta.model_extra.get("extra_content")
        for c in chunks
        if c.choices and c.choices[0].delta.model_extra
    ]
    assert {"google": {"thought_signature": TEXT_SIG}} in extras
    fake.enqueue(ENDPOINTS["gemini"], {"stream_body": stream})
    r = gemini_post(
        server,
        "gemini-3-pro-preview",
        {"contents": [{"parts": [{"text": "hi"}]}]},
        "streamGenerateContent?alt=sse",
    )
    parts = [
        p
        for line in r.text.splitlines()
        if line.startswith("data: ")
        for p in orjson.loads(line[6:])["candidates"][0]["content"]["parts"]
    ]
    assert parts[-1] == {"text": "", "thoughtSignature": TEXT_SIG}  # as Gemini 3 streams it


# -- 3. Anthropic server tools -----------------------------------------------------------------------

WEB_SEARCH = {"type": "web_search_20250305", "name": "web_search", "max_uses": 3}


def test_server_tools_pass_through_for_claude_and_come_back(server: Ensemble, fake: FakeUpstream) -> None:
    replay_json(fake, "anthropic", "web_search")
    with claude(server) as c:
        first = c.messages.create(
            model="claude-sonnet-4-5",
            max_tokens=500,
            messages=USER,
            tools=[WEB_SEARCH],
        )
        assert sent(fake, "anthropic")["tools"] == [WEB_SEARCH]
        assert [b.type for b in first.content] == [
            "text",
            "server_tool_use",
            "web_search_tool_result",
            "text",
        ]
        assert first.stop_reason == "end_turn"  # a search Claude ran itself: nothing for the client to run
        c.messages.create(
            model="claude-sonnet-4-5",
            max_tokens=500,
            tools=[WEB_SEARCH],
            messages=[
                *USER,
                {"role": "assistant", "content": first.content},
                {"role": "user", "content": "thanks"},
            ],
        )
    replayed = sent(fake, "anthropic")["messages"][1]["content"]
    fixture = orjson.loads((FIXTURES / "anthropic" / "web_search.response.json").read_bytes())["content"]
    assert [b["type"] for b in replayed] == [b["type"] for b in fixture]
    assert replayed[1:3] == fixture[1:3]  # the server tool's call and its encrypted results, verbatim


def test_a_paused_server_tool_turn_stays_paused(server: Ensemble, fake: FakeUpstream) -> None:
    answer = orjson.loads((FIXTURES / "anthropic" / "web_search.response.json").read_bytes())
    answer = {**answer, "content": answer["content"][:2], "stop_reason": "pause_turn"}
    fake.enqueue(ENDPOINTS["anthropic"], {"replay_json": answer})
    with claude(server) as c:
        paused = c.messages.create(
            model="claude-sonnet-4-5", max_tokens=500, messages=USER, tools=[WEB_SEARCH]
        )
    assert paused.stop_reason == "pause_turn"  # the client knows to send it back for Claude to go on
    assert [b.type for b in paused.content] == ["text", "server_tool_use"]


def test_server_tool_blocks_are_no_tool_calls_for_openai_clients(
    server: Ensemble, fake: FakeUpstream
) -> None:
    replay_json(fake, "anthropic", "web_search")
    with gpt(server) as o:
        answer = o.chat.completions.create(model="claude-sonnet-4-5", messages=USER)
    choice = answer.choices[0]
    assert choice.message.tool_calls is None and choice.finish_reason == "stop"
    assert choice.message.content is not None and "April 30, 1916" in choice.message.content
    # Claude's web source for the cited text, as OpenAI's own url_citation annotation.
    assert choice.message.annotations is not None
    cited = choice.message.annotations[0].url_citation
    assert cited.url == "https://en.wikipedia.org/wiki/Claude_Shannon"
    assert choice.message.content[cited.start_index : cited.end_index].startswith("Claude Shannon was born")


def test_web_sources_reach_openai_streams_and_gemini_clients(server: Ensemble, fake: FakeUpstream) -> None:
    url = "https://en.wikipedia.org/wiki/Claude_Shannon"
    fake.enqueue(
        ENDPOINTS["anthropic"],
        {"stream_body": (FIXTURES / "anthropic" / "web_search.stream.txt").read_text()},
    )
    with server.client() as http:
        r = http.post(
            "/v1/chat/completions", json={"model": "claude-sonnet-4-5", "messages": USER, "stream": True}
        )
    deltas = [
        c["choices"][0]["delta"]
        for c in (orjson.loads(x[6:]) for x in r.text.splitlines() if x.startswith("data: {"))
        if c["choices"]
    ]
    annotations = [a for d in deltas for a in d.get("annotations", ())]
    assert [a["url_citation"]["url"] for a in annotations] == [url]

    replay_json(fake, "anthropic", "web_search")
    r = gemini_post(server, "claude-sonnet-4-5", {"contents": [{"parts": [{"text": "hi"}]}]})
    candidate = r.json()["candidates"][0]
    grounding = candidate["groundingMetadata"]
    assert grounding["groundingChunks"] == [{"web": {"uri": url, "title": "Claude Shannon - Wikipedia"}}]
    segment = grounding["groundingSupports"][0]["segment"]
    text = "".join(p["text"] for p in candidate["content"]["parts"]).encode()
    assert text[segment["startIndex"] : segment["endIndex"]].decode().startswith("Claude Shannon was born")


def test_anthropic_defined_tools_are_refused_for_other_providers(server: Ensemble) -> None:
    with claude(server) as c, pytest.raises(anthropic.BadRequestError) as e:
        c.messages.create(model="gpt-4o", max_tokens=50, messages=USER, tools=[WEB_SEARCH])
    assert "web_search" in e.value.message and "only Claude" in e.value.message


# -- 4. mid-conversation system turns (what Claude Code sends) ---------------------------------------

# Claude Code's shape: the user's turn, then harness context as a system turn right after it.
CLAUDE_CODE = [
    {"role": "user", "content": "List the files"},
    {"role": "assistant", "content": "Which directory?"},
    {"role": "user", "content": "This one"},
    {"role": "system", "content": [{"type": "text", "text": "Available agents: explore, plan"}]},
]
REMINDER = "<system-reminder>\nAvailable agents: explore, plan\n</system-reminder>"


def _claude_code(server: Ensemble, model: str) -> anthropic.types.Message:
    with claude(server) as c:
        return c.messages.create(
            model=model, max_tokens=100, system="You are Claude Code.", messages=CLAUDE_CODE
        )


def test_system_turn_kept_in_place_for_claude_models_that_take_it(
    server: Ensemble, fake: FakeUpstream
) -> None:
    assert _claude_code(server, "claude-opus-4-8").content[0].type == "text"
    body = sent(fake, "anthropic")
    assert body["system"] == [{"type": "text", "text": "You are Claude Code."}]
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user", "system"]
    assert body["messages"][3]["content"] == [{"type": "text", "text": "Available agents: explore, plan"}]


def test_system_turn_translated_for_older_claude_gemini_and_openai(
    server: Ensemble, fake: FakeUpstream
) -> None:
    _claude_code(server, "claude-sonnet-4-5")  # before Opus 4.8: no system turns
    body = sent(fake, "anthropic")
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["messages"][2]["content"][-1] == {"type": "text", "text": REMINDER}

    _claude_code(server, "gemini-3-pro-preview")
    body = sent(fake, "gemini")
    assert body["systemInstruction"] == {"parts": [{"text": "You are Claude Code."}]}
    assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]
    assert body["contents"][2]["parts"][-1] == {"text": REMINDER}

    _claude_code(server, "gpt-4o")  # OpenAI takes system messages anywhere
    roles = [(m["role"], m["content"]) for m in sent(fake, "openai")["messages"]]
    assert roles[0] == ("system", "You are Claude Code.")
    assert roles[-1] == ("system", "Available agents: explore, plan")


def test_a_system_turn_cannot_come_first(server: Ensemble) -> None:
    with claude(server) as c, pytest.raises(anthropic.BadRequestError) as e:
        c.messages.create(
            model="claude-opus-4-8", max_tokens=10, messages=[{"role": "system", "content": "x"}, *USER]
        )
    assert "messages[0].role" in e.value.message
