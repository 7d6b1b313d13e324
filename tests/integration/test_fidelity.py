"""Provider fidelity through every ingress, with the official SDKs as clients (docs/catalogue.md).

What reaches the upstream is what the target model accepts (the conformance fixture checks every
upstream body against the official SDKs' request types too); structured output is translated, not
dropped; cost reaches every format; refusals are in the request log with the status the client got.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pydantic
import pytest
from google import genai
from google.genai import types

from support.ensemble import Ensemble
from support.fake import FakeUpstream
from support.waiting import wait_until

pytestmark = pytest.mark.integration

UPSTREAM_KEY = "sk-test-upstream-key-000000"
ADMIN = "admin-fidelity-test-key-0000000000"
# model → (provider type, fake endpoint). No prices: the catalogue's defaults apply.
MODELS = {
    "gpt-5-mini": ("openai", "ep-openai"),
    "claude-sonnet-4-0": ("anthropic", "ep-anthropic"),
    "claude-sonnet-4-5": ("anthropic", "ep-anthropic"),
    "gemini-2.5-flash": ("gemini", "ep-gemini"),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, fake: FakeUpstream) -> Iterator[Ensemble]:
    providers: dict[str, dict[str, Any]] = {}
    for model, (kind, endpoint) in MODELS.items():
        p = providers.setdefault(
            kind,
            {
                "name": kind,
                "type": kind,
                "base_url": fake.endpoint_url(endpoint),
                "endpoints": [{"id": f"{kind}-primary", "api_key": UPSTREAM_KEY}],
                "models": [],
            },
        )
        p["models"].append({"name": model})
    ens = Ensemble(
        Path(tmp_path_factory.mktemp("fidelity")),
        providers=list(providers.values()),
        env={"ENSEMBLE_ADMIN_KEY": ADMIN},
    )
    yield ens
    ens.stop()


@pytest.fixture(autouse=True)
def _fresh(fake: FakeUpstream) -> None:
    fake.reset()


def _upstream(fake: FakeUpstream, model: str) -> dict[str, Any]:
    records = [r for r in fake.requests(MODELS[model][1]) if r["method"] == "POST"]
    assert records, f"nothing reached the upstream of {model}"
    body: dict[str, Any] = records[-1]["body"]
    return body


# --- one call per ingress, with the same intent ---------------------------------------------------


def via_openai(server: Ensemble, model: str, **params: Any) -> Any:
    with openai.OpenAI(base_url=server.url + "/v1", api_key=server.key, max_retries=0) as c:
        return c.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "Hi there"}], **params
        )


def via_anthropic(server: Ensemble, model: str, **params: Any) -> Any:
    with anthropic.Anthropic(base_url=server.url, api_key=server.key, max_retries=0) as c:
        return c.messages.create(
            model=model,
            max_tokens=params.pop("max_tokens", 4000),
            messages=[{"role": "user", "content": "Hi there"}],
            **params,
        )


def via_gemini(server: Ensemble, model: str, **config: Any) -> Any:
    client = genai.Client(
        api_key=server.key,
        http_options=types.HttpOptions(base_url=server.url, retry_options=types.HttpRetryOptions(attempts=1)),
    )
    try:
        return client.models.generate_content(
            model=model, contents="Hi there", config=types.GenerateContentConfig(**config)
        )
    finally:
        client.close()


def via_native(server: Ensemble, model: str, **fields: Any) -> Any:
    r = httpx.post(
        f"{server.url}/api/v1/generate",
        headers={"authorization": f"Bearer {server.key}"},
        json={"model": model, "messages": [{"role": "user", "content": "Hi there"}], **fields},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return r


# Sampling parameters as each ingress spells them: temperature 0.3, top_p 0.5, a stop sequence.
SAMPLING: dict[str, Callable[[Ensemble, str], Any]] = {
    "openai": lambda s, m: via_openai(s, m, temperature=0.3, top_p=0.5, stop=["END"]),
    # The anthropic SDK no longer declares the sampling parameters; clients send them as extra body.
    "anthropic": lambda s, m: via_anthropic(
        s, m, stop_sequences=["END"], extra_body={"temperature": 0.3, "top_p": 0.5}
    ),
    "gemini": lambda s, m: via_gemini(s, m, temperature=0.3, top_p=0.5, stop_sequences=["END"]),
    "native": lambda s, m: via_native(s, m, temperature=0.3, top_p=0.5, stop_sequences=["END"]),
}

# The same plus thinking on, in each ingress's words.
THINKING: dict[str, Callable[[Ensemble, str], Any]] = {
    "openai": lambda s, m: via_openai(
        s,
        m,
        temperature=0.3,
        top_p=0.5,
        reasoning_effort="low",
        max_completion_tokens=4000,
        extra_body={"top_k": 5},
    ),
    "anthropic": lambda s, m: via_anthropic(
        s,
        m,
        thinking={"type": "enabled", "budget_tokens": 2048},
        extra_body={"temperature": 0.3, "top_p": 0.5, "top_k": 5},
    ),
    "gemini": lambda s, m: via_gemini(
        s,
        m,
        temperature=0.3,
        top_p=0.5,
        top_k=5,
        max_output_tokens=4000,
        thinking_config=types.ThinkingConfig(thinking_budget=2048, include_thoughts=True),
    ),
    "native": lambda s, m: via_native(
        s,
        m,
        temperature=0.3,
        top_p=0.5,
        max_tokens=4000,
        provider_config={"reasoning_effort": "low", "top_k": 5},
    ),
}


@pytest.mark.parametrize("ingress", sorted(SAMPLING))
def test_reasoning_models_get_no_sampling_parameters(
    server: Ensemble, fake: FakeUpstream, ingress: str
) -> None:
    """Finding 1: gpt-5 / o-series refuse temperature, top_p and stop."""
    SAMPLING[ingress](server, "gpt-5-mini")
    sent = _upstream(fake, "gpt-5-mini")
    assert {"temperature", "top_p", "stop"}.isdisjoint(sent), sent
    assert "max_tokens" not in sent


@pytest.mark.parametrize("ingress", sorted(THINKING))
def test_thinking_for_claude_keeps_only_what_thinking_allows(
    server: Ensemble, fake: FakeUpstream, ingress: str
) -> None:
    """Finding 2: with thinking on, Claude takes temperature 1 only, top_p >= 0.95, no top_k."""
    THINKING[ingress](server, "claude-sonnet-4-0")
    sent = _upstream(fake, "claude-sonnet-4-0")
    assert sent["thinking"]["type"] == "enabled", sent
    assert {"temperature", "top_p", "top_k"}.isdisjoint(sent), sent


@pytest.mark.parametrize("ingress", sorted(SAMPLING))
def test_claude_45_gets_temperature_or_top_p_not_both(
    server: Ensemble, fake: FakeUpstream, ingress: str
) -> None:
    """Finding 3: Claude 4.5 models refuse temperature and top_p together: temperature is kept."""
    SAMPLING[ingress](server, "claude-sonnet-4-5")
    sent = _upstream(fake, "claude-sonnet-4-5")
    assert sent["temperature"] == 0.3 and "top_p" not in sent
    assert sent["stop_sequences"] == ["END"]


def test_forced_tool_with_claude_thinking_is_a_400_naming_tool_choice(server: Ensemble) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        via_openai(
            server,
            "claude-sonnet-4-0",
            reasoning_effort="medium",
            max_completion_tokens=4000,
            tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
            tool_choice="required",
        )
    assert e.value.body["param"] == "tool_choice"  # type: ignore[index]


class Reply(pydantic.BaseModel):
    answer: str
    confidence: int


@pytest.mark.parametrize("model", ["claude-sonnet-4-5", "gemini-2.5-flash", "gpt-5-mini"])
def test_openai_parse_with_a_pydantic_model_gets_json_from_every_provider(
    server: Ensemble, fake: FakeUpstream, model: str
) -> None:
    """Finding 7: `.parse(response_format=Model)` (what instructor and the SDK's helpers send)."""
    with openai.OpenAI(base_url=server.url + "/v1", api_key=server.key, max_retries=0) as c:
        done = c.chat.completions.parse(
            model=model, messages=[{"role": "user", "content": "Answer"}], response_format=Reply
        )
    parsed = done.choices[0].message.parsed
    assert isinstance(parsed, Reply)
    sent = _upstream(fake, model)
    schema = (
        sent.get("output_config", {}).get("format", {}).get("schema")
        or sent.get("generationConfig", {}).get("responseJsonSchema")
        or sent.get("response_format", {}).get("json_schema", {}).get("schema")
    )
    assert schema is not None and set(schema["properties"]) == {"answer", "confidence"}, sent


def test_json_object_mode_reaches_claude_and_gemini(server: Ensemble, fake: FakeUpstream) -> None:
    """Gemini has a JSON switch; Claude has none for "any object", so it is told in the system prompt."""
    r = via_openai(server, "gemini-2.5-flash", response_format={"type": "json_object"})
    assert isinstance(orjson.loads(r.choices[0].message.content), dict)
    via_openai(server, "claude-sonnet-4-5", response_format={"type": "json_object"})
    assert "JSON" in str(_upstream(fake, "claude-sonnet-4-5")["system"])
    assert _upstream(fake, "gemini-2.5-flash")["generationConfig"]["responseMimeType"] == "application/json"


def test_anthropic_output_config_and_gemini_schema_reach_other_providers(
    server: Ensemble, fake: FakeUpstream
) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    }
    r = via_anthropic(
        server, "gpt-5-mini", output_config={"format": {"type": "json_schema", "schema": schema}}
    )
    assert orjson.loads(r.content[0].text) == {"city": "test"}
    assert _upstream(fake, "gpt-5-mini")["response_format"]["json_schema"]["schema"] == schema
    g = via_gemini(
        server, "claude-sonnet-4-5", response_mime_type="application/json", response_json_schema=schema
    )
    assert orjson.loads(g.text) == {"city": "test"}
    assert _upstream(fake, "claude-sonnet-4-5")["output_config"]["format"]["schema"] == schema


def _cost_header(r: httpx.Response) -> Decimal:
    return Decimal(r.headers["x-ensemble-cost-usd"])


def test_cost_reaches_every_format(server: Ensemble) -> None:
    """Finding 10: x-ensemble-cost-usd on whole answers, usage.cost for OpenAI-format clients (also
    in the final usage chunk), priced from the catalogue (the provider files list no price)."""
    with openai.OpenAI(base_url=server.url + "/v1", api_key=server.key, max_retries=0) as c:
        raw = c.chat.completions.with_raw_response.create(
            model="gpt-5-mini", messages=[{"role": "user", "content": "Hi"}]
        )
        done = raw.parse()
        cost = Decimal(raw.headers["x-ensemble-cost-usd"])
        assert cost > 0 and done.usage is not None
        assert Decimal(str(done.usage.model_extra["cost"])) == cost  # type: ignore[index]
        chunks = list(
            c.chat.completions.create(
                model="gpt-5-mini",
                messages=[{"role": "user", "content": "Hi"}],
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        final = chunks[-1].usage
        assert final is not None and final.model_extra["cost"] > 0  # type: ignore[index]
    with anthropic.Anthropic(base_url=server.url, api_key=server.key, max_retries=0) as a:
        raw_a = a.messages.with_raw_response.create(
            model="claude-sonnet-4-5", max_tokens=100, messages=[{"role": "user", "content": "Hi"}]
        )
        assert _cost_header(raw_a.http_response) > 0  # type: ignore[arg-type]
    r = httpx.post(
        f"{server.url}/v1beta/models/gemini-2.5-flash:generateContent",
        headers={"x-goog-api-key": server.key},
        json={"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]},
        timeout=30,
    )
    assert r.status_code == 200 and _cost_header(r) > 0
    assert _cost_header(via_native(server, "gemini-2.5-flash")) > 0


# A body each format's parser refuses (400), and how its route is called.
REFUSED: dict[str, tuple[str, dict[str, str], dict[str, Any]]] = {
    "openai": (
        "/v1/chat/completions",
        {},
        {"model": "gpt-5-mini", "messages": [{"role": "robot", "content": "x"}]},
    ),
    "anthropic": (
        "/v1/messages",
        {"anthropic-version": "2023-06-01"},
        {"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": "not a list"},
    ),
    "gemini": ("/v1beta/models/gemini-2.5-flash:generateContent", {}, {"contents": []}),
    "native": ("/api/v1/generate", {}, {"model": "gpt-5-mini", "messages": [], "temperature": 9}),
}


@pytest.mark.parametrize("ingress", sorted(REFUSED))
def test_refusals_are_in_the_request_log_with_the_status_the_client_got(
    server: Ensemble, ingress: str
) -> None:
    """Finding 11: one record per authenticated request, 400s on provider-format routes included."""
    path, headers, body = REFUSED[ingress]
    rid = f"req_fidelity_refused_{ingress}"
    r = httpx.post(
        server.url + path,
        headers={"authorization": f"Bearer {server.key}", "x-request-id": rid, **headers},
        json=body,
        timeout=30,
    )
    assert r.status_code == 400, r.text
    with httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {ADMIN}"}, timeout=30) as admin:

        def logged() -> list[dict[str, Any]]:
            logs: list[dict[str, Any]] = admin.get("/admin/logs", params={"limit": 200}).json()["logs"]
            return [e for e in logs if e["request_id"] == rid]

        wait_until(lambda: bool(logged()), timeout=10, what=f"the record of {rid}")
        (entry,) = logged()
    assert entry["http_status"] == 400 and entry["status"] == "error"
    if ingress != "gemini":
        assert entry["model"] == body["model"]
    else:
        assert entry["model"] == "gemini-2.5-flash"


def test_an_upstream_400_is_logged_as_400(server: Ensemble, fake: FakeUpstream) -> None:
    fake.enqueue("ep-anthropic", {"status": 400, "message": "messages: bad"})
    rid = "req_fidelity_upstream_400"
    with (
        anthropic.Anthropic(base_url=server.url, api_key=server.key, max_retries=0) as a,
        pytest.raises(anthropic.BadRequestError),
    ):
        a.messages.create(
            model="claude-sonnet-4-5",
            max_tokens=10,
            messages=[{"role": "user", "content": "Hi"}],
            extra_headers={"x-request-id": rid},
        )
    with httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {ADMIN}"}, timeout=30) as admin:
        wait_until(
            lambda: any(
                e["request_id"] == rid for e in admin.get("/admin/logs", params={"limit": 50}).json()["logs"]
            ),
            timeout=10,
            what="the record",
        )
        entry = next(
            e for e in admin.get("/admin/logs", params={"limit": 50}).json()["logs"] if e["request_id"] == rid
        )
    assert entry["http_status"] == 400


def test_the_retry_after_a_client_gets_after_an_upstream_429_is_true(
    server: Ensemble, fake: FakeUpstream
) -> None:
    """Finding 12: the upstream says `retry-after: 2` with `x-ratelimit-reset-requests` of the whole
    window (up to a minute); OpenAI refills continuously, so 2 s is the truth, and a client that
    waits what the gateway says gets through (it used to be told 3 s, then refused for a minute)."""
    fake.enqueue("ep-openai", {"status": 429, "retry_after": 2})
    body = {"model": "gpt-5-mini", "messages": [{"role": "user", "content": "Hi"}]}
    headers = {"authorization": f"Bearer {server.key}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as c:
        first = c.post("/v1/chat/completions", json=body)
        assert first.status_code == 429, first.text
        told = int(first.headers["retry-after"])
        assert 2 <= told <= 3
        started = time.monotonic()
        wait_until(
            lambda: c.post("/v1/chat/completions", json=body).status_code == 200,
            timeout=told + 3.0,
            what="an answer once the Retry-After passed",
        )
        assert time.monotonic() - started <= told + 3.0


@pytest.mark.nonconforming_upstream
def test_the_conformance_check_sees_every_body_that_reaches_the_fake(fake: FakeUpstream) -> None:
    """The check the `upstream_conformance` fixture runs after every test is not a rubber stamp: a
    body the real API would refuse, sent straight to the fake, is reported with what is wrong."""
    bad = {"model": "o3", "messages": [{"role": "user", "content": "x"}], "temperature": 0.2, "thinking": {}}
    httpx.post(fake.endpoint_url("ep-openai") + "/v1/chat/completions", json=bad, timeout=10)
    found = fake.conformance_problems()
    assert any("temperature: refused by o3" in p for p in found), found
    assert any("thinking: not a Chat Completions parameter" in p for p in found), found
    assert fake.conformance_problems() == []  # each request is checked once
