"""Every ingress format → every provider adapter: the upstream body must be one the real API accepts.

Each client request is parsed by its ingress (OpenAI, Anthropic, Gemini, native), fitted to the
target model by the catalogue as the gateway does per attempt, and built by the target's wire
format; `support.conformance` then checks the body against the official SDKs' request types and the
providers' documented per-model rules. The last tests show the checker catches what fitting removes.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from ensemble import catalogue
from ensemble.api import anthropic as anthropic_api
from ensemble.api import gemini as gemini_api
from ensemble.api import native as native_api
from ensemble.api import openai as openai_api
from ensemble.config.schema import EndpointConfig, ModelConfig, ProviderConfig
from ensemble.providers import registry
from ensemble.providers.base import Endpoint, Target, WireFormat
from ensemble.types import InferenceRequest
from ensemble.usage.pricing import Price
from support import conformance

TOOL = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string"}},
    "required": ["answer"],
    "additionalProperties": False,
}


def _openai(**extra: Any) -> InferenceRequest:
    body = {
        "model": "x",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather?"}],
        "temperature": 0.3,
        "top_p": 0.5,
        "stop": ["END"],
        "max_completion_tokens": 3000,
        "tools": [{"type": "function", "function": {"name": "weather", "parameters": TOOL}}],
        **extra,
    }
    return openai_api.parse_request(orjson.dumps(body))[0]


def _anthropic(**extra: Any) -> InferenceRequest:
    body = {
        "model": "x",
        "max_tokens": 3000,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "Weather?"}],
        "temperature": 0.3,
        "top_p": 0.5,
        "top_k": 5,
        "stop_sequences": ["END"],
        "tools": [{"name": "weather", "input_schema": TOOL}],
        **extra,
    }
    return anthropic_api.parse_request(orjson.dumps(body))


def _gemini(**extra_gen: Any) -> InferenceRequest:
    body = {
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "contents": [{"role": "user", "parts": [{"text": "Weather?"}]}],
        "tools": [{"functionDeclarations": [{"name": "weather", "parametersJsonSchema": TOOL}]}],
        "generationConfig": {
            "temperature": 0.3,
            "topP": 0.5,
            "topK": 5,
            "stopSequences": ["END"],
            "maxOutputTokens": 3000,
            **extra_gen,
        },
    }
    return gemini_api.parse_request(orjson.dumps(body), "x", stream=False)


def _native(**extra: Any) -> InferenceRequest:
    body = {
        "model": "x",
        "messages": [{"role": "user", "content": "Weather?"}],
        "temperature": 0.3,
        "top_p": 0.5,
        "stop_sequences": ["END"],
        "max_tokens": 3000,
        **extra,
    }
    return native_api.parse_request(orjson.dumps(body))


INGRESS = {
    "openai": _openai,
    "openai+reasoning": lambda: _openai(reasoning_effort="medium"),
    "openai+json_schema": lambda: _openai(
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "reply", "schema": SCHEMA, "strict": True},
        }
    ),
    "openai+json_object": lambda: _openai(response_format={"type": "json_object"}),
    "anthropic": _anthropic,
    "anthropic+thinking": lambda: _anthropic(thinking={"type": "enabled", "budget_tokens": 2048}),
    "gemini": _gemini,
    "gemini+thinking": lambda: _gemini(thinkingConfig={"thinkingBudget": 2048, "includeThoughts": True}),
    "gemini+schema": lambda: _gemini(responseMimeType="application/json", responseJsonSchema=SCHEMA),
    "gemini+json": lambda: _gemini(responseMimeType="application/json"),
    "native": _native,
    "native+json_schema": lambda: _native(
        response_format={"type": "json_schema", "name": "reply", "schema": SCHEMA}
    ),
}

# (provider type, the provider's model id)
TARGETS = [
    ("openai", "gpt-4o"),
    ("openai", "o3"),
    ("openai", "gpt-5-mini"),
    ("anthropic", "claude-sonnet-4-5"),
    ("anthropic", "claude-sonnet-4-0"),
    ("anthropic", "claude-opus-4-1"),
    ("anthropic", "claude-opus-4-7"),
    ("gemini", "gemini-2.5-flash"),
    ("xai", "grok-4"),
    ("openrouter", "openai/gpt-5"),
]


def _wire(provider_type: str) -> WireFormat:
    make = registry.kind(provider_type).wire
    assert make is not None
    return make(ProviderConfig(name=provider_type, type=provider_type))


def _target(provider_type: str, model: str) -> Target:
    provider = ProviderConfig(name=provider_type, type=provider_type, base_url="http://127.0.0.1:9")
    endpoint = Endpoint.from_config(EndpointConfig(id=f"{provider_type}-1", api_key="k"), provider)
    config = ModelConfig(name=model, max_output_tokens=64000)
    return Target(provider=None, endpoint=endpoint, model=config, price=Price(config.pricing))  # type: ignore[arg-type]


def _record(url: str, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    return {
        "method": "POST",
        "path": url.split("127.0.0.1:9", 1)[1].split("?")[0],
        "headers": {k.lower(): v for k, v in headers.items()},
        "body": orjson.loads(body),
    }


def built(
    ingress: str, provider_type: str, model: str, *, fit: bool = True, stream: bool = False
) -> dict[str, Any]:
    request = INGRESS[ingress]()
    request.model = model
    if fit:
        request = catalogue.shipped().fit(request, model, "req_conformance")
    return _record(*_wire(provider_type).build(request, _target(provider_type, model), stream))


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize(("provider_type", "model"), TARGETS, ids=[f"{t}:{m}" for t, m in TARGETS])
@pytest.mark.parametrize("ingress", sorted(INGRESS))
def test_outgoing_request_is_accepted_by_the_real_api(
    ingress: str, provider_type: str, model: str, stream: bool
) -> None:
    record = built(ingress, provider_type, model, stream=stream)
    assert conformance.problems(record) == []


# The checker is not a rubber stamp: without the catalogue's fitting, these bodies are refused.
UNFITTED = [
    ("openai", "openai", "o3", "temperature"),
    ("native", "openai", "gpt-5-mini", "stop"),
    ("anthropic+thinking", "anthropic", "claude-sonnet-4-0", "temperature: may only be 1"),
    ("gemini+thinking", "anthropic", "claude-sonnet-4-0", "top_k"),
    ("openai", "anthropic", "claude-sonnet-4-5", "temperature and top_p"),
    ("anthropic", "xai", "grok-4", "stop"),
    ("native", "anthropic", "claude-opus-4-7", "temperature"),
]


@pytest.mark.parametrize(("ingress", "provider_type", "model", "problem"), UNFITTED)
def test_checker_refuses_unfitted_bodies(ingress: str, provider_type: str, model: str, problem: str) -> None:
    found = conformance.problems(built(ingress, provider_type, model, fit=False))
    assert any(problem in p for p in found), found


def test_checker_uses_the_sdk_types() -> None:
    good = built("openai", "openai", "gpt-4o")
    bad = {**good, "body": {**good["body"], "messages": [{"role": "user"}], "thinking": {"type": "enabled"}}}
    found = conformance.problems(bad)
    assert any("thinking: not a Chat Completions parameter" in p for p in found)
    assert any("messages" in p for p in found)
    gem = built("gemini", "gemini", "gemini-2.5-flash")
    gem["body"]["generationConfig"]["thinking"] = {"budget": 3}
    assert any("generationConfig" in p for p in conformance.problems(gem))
    ant = built("anthropic", "anthropic", "claude-sonnet-4-0")
    ant["body"]["messages"] = [{"role": "robot", "content": "x"}]
    assert any("messages" in p for p in conformance.problems(ant))


def _structured(body: dict[str, Any], provider_type: str) -> Any:
    """The body's structured-output instruction, in the target API's own mechanism."""
    if provider_type == "anthropic":
        return (body.get("output_config") or {}).get("format") or (
            "JSON object" in str(body.get("system")) and "instruction"
        )
    if provider_type == "gemini":
        gen = body.get("generationConfig") or {}
        return gen.get("responseMimeType") == "application/json" and (gen.get("responseJsonSchema") or "json")
    return body.get("response_format")


# Finding 7: structured output reaches every provider in its own mechanism, never dropped.
@pytest.mark.parametrize(("provider_type", "model"), TARGETS, ids=[f"{t}:{m}" for t, m in TARGETS])
@pytest.mark.parametrize(
    "ingress", ["openai+json_schema", "openai+json_object", "gemini+schema", "gemini+json"]
)
def test_structured_output_is_translated_not_dropped(ingress: str, provider_type: str, model: str) -> None:
    body = built(ingress, provider_type, model)["body"]
    found = _structured(body, provider_type)
    assert found, body
    if ingress not in ("openai+json_schema", "gemini+schema", "native+json_schema"):
        return
    if found == "instruction":  # a model older than Anthropic's structured outputs: told in the system prompt
        assert catalogue.shipped().lookup(model).structured_output == "instruction"  # type: ignore[union-attr]
        assert orjson.dumps(SCHEMA).decode() in str(body["system"])
        return
    schema = found if provider_type == "gemini" else found.get("schema") or found["json_schema"]["schema"]
    assert schema == SCHEMA
