"""Does an upstream request body conform to what the real provider accepts?

Checked against material the project did not write: the official SDKs' request types (`openai`
`CompletionCreateParams`, `anthropic` `MessageCreateParams`, `google.genai` `Content` /
`GenerationConfig` / `Tool` / `ToolConfig`, validated with pydantic), plus the providers' documented
per-model rules as the model catalogue lists them (OpenAI reasoning models refuse sampling
parameters; Claude with thinking takes temperature 1 only, top_p >= 0.95, no top_k, no forced tool
use; Claude 4.5 takes temperature or top_p, not both). `problems(record)` lists what is wrong with
one request the fake upstream recorded; the `conformance` fixture fails a test on any.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import Any

import pydantic

from ensemble import catalogue

# Keys OpenAI-compatible APIs (OpenRouter, xAI, local servers) take beyond OpenAI's own.
_COMPATIBLE_EXTRAS = frozenset(
    {
        "top_k",
        "reasoning",
        "provider",
        "transforms",
        "models",
        "route",
        "usage",
        "min_p",
        "top_a",
        "repetition_penalty",
        "search_parameters",
        "plugins",
    }
)
# Sampling parameters API version 2023-06-01 (the one the gateway sends) accepts for Claude models up
# to the 4.x generation; SDKs pinned to later API versions no longer declare them.
_ANTHROPIC_SAMPLING = {"temperature": float, "top_p": float, "top_k": int}
_GEMINI_TOP = frozenset(
    {
        "contents",
        "systemInstruction",
        "tools",
        "toolConfig",
        "generationConfig",
        "safetySettings",
        "cachedContent",
        "labels",
    }
)


@functools.cache
def _openai() -> tuple[pydantic.TypeAdapter[Any], frozenset[str]]:
    from openai.types.chat import completion_create_params as p

    return pydantic.TypeAdapter(p.CompletionCreateParamsBase), frozenset(
        p.CompletionCreateParamsBase.__annotations__
    )


@functools.cache
def _anthropic(beta: bool) -> tuple[pydantic.TypeAdapter[Any], frozenset[str]]:
    if beta:
        from anthropic.types.beta import message_create_params as p
    else:
        from anthropic.types import message_create_params as p  # type: ignore[no-redef]
    return pydantic.TypeAdapter(p.MessageCreateParamsBase), frozenset(
        p.MessageCreateParamsBase.__annotations__
    )


_EMBEDDING_INPUT: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(
    str | list[str] | list[int] | list[list[int]]
)


@functools.cache
def _openai_other(kind: str) -> tuple[pydantic.TypeAdapter[Any], frozenset[str]]:
    if kind == "responses":
        from openai.types.responses import response_create_params as r

        return pydantic.TypeAdapter(r.ResponseCreateParamsBase), frozenset(
            r.ResponseCreateParamsBase.__annotations__
        )
    from openai.types import embedding_create_params as e

    return pydantic.TypeAdapter(e.EmbeddingCreateParams), frozenset(e.EmbeddingCreateParams.__annotations__)


def openai_typed(body: Mapping[str, Any], kind: str) -> list[str]:
    """Responses (`POST /v1/responses`) and embeddings bodies against the SDK's params types, plus
    the reasoning models' refusals for Responses."""
    adapter, known = _openai_other(kind)
    out = [f"{k}: not a {kind} parameter" for k in body if k not in known | {"stream"}]
    if kind == "embeddings" and "input" in body:
        # The SDK types `input` as a union of lazily checked iterables (str, [str], [int], [[int]]),
        # which pydantic would bind to the first; the same union as lists is checked eagerly.
        out += _errors(_EMBEDDING_INPUT, body["input"], "input")
        body = _strip(body, {"input"}) | {"input": "x"}
    out += _errors(adapter, _strip(body, {"stream"}), "")
    model = str(body.get("model") or "")
    info = catalogue.shipped().lookup(model)
    if kind == "responses" and info is not None:
        out += [f"{p}: refused by {model}" for p in info.rules.unsupported if p in body]
    return out


@functools.cache
def _gemini() -> dict[str, pydantic.TypeAdapter[Any]]:
    from google.genai import types

    return {
        "contents": pydantic.TypeAdapter(list[types.Content]),
        "systemInstruction": pydantic.TypeAdapter(types.Content),
        "tools": pydantic.TypeAdapter(list[types.Tool]),
        "toolConfig": pydantic.TypeAdapter(types.ToolConfig),
        "generationConfig": pydantic.TypeAdapter(types.GenerationConfig),
        "safetySettings": pydantic.TypeAdapter(list[types.SafetySetting]),
    }


def _drain(value: Any, path: str, out: list[str]) -> None:
    """Consume what pydantic validates lazily (the SDKs type lists as `Iterable[...]`, checked only
    item by item as they are read), collecting the errors with the path to them."""
    if isinstance(value, dict):
        for k, v in value.items():
            _drain(v, f"{path}.{k}" if path else str(k), out)
        return
    if isinstance(value, str | bytes) or not hasattr(value, "__iter__"):
        return
    try:
        items = list(value)
    except pydantic.ValidationError as e:
        out += [_describe(err, path) for err in e.errors()[:3]]
        return
    for i, v in enumerate(items):
        _drain(v, f"{path}[{i}]", out)


def _describe(err: Any, where: str) -> str:
    loc = ".".join(map(str, err["loc"]))
    return f"{where}{'.' if where and loc else ''}{loc}: {err['msg']}"


def _errors(adapter: pydantic.TypeAdapter[Any], value: Any, where: str) -> list[str]:
    out: list[str] = []
    try:
        _drain(adapter.validate_python(value), where, out)
    except pydantic.ValidationError as e:
        out += [_describe(err, where) for err in e.errors()[:5]]
    return out


def _strip(body: Mapping[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    drop = set(keys)
    return {k: v for k, v in body.items() if k not in drop}


# --- per API ------------------------------------------------------------------------------------


def openai_chat(body: Mapping[str, Any]) -> list[str]:
    adapter, known = _openai()
    out = [
        f"{k}: not a Chat Completions parameter"
        for k in body
        if k not in known | _COMPATIBLE_EXTRAS | {"stream"}
    ]
    out += _errors(adapter, _strip(body, _COMPATIBLE_EXTRAS | {"stream"}), "")
    if (body.get("response_format") or {}).get("type") == "json_object" and "json" not in str(
        body.get("messages")
    ).lower():
        out.append("response_format: json_object needs the word JSON in the messages")
    model = str(body.get("model") or "")
    info = catalogue.shipped().lookup(model)
    if info is not None:
        wire = {"stop_sequences": "stop"}
        for param in info.rules.unsupported:
            if wire.get(param, param) in body:
                out.append(f"{wire.get(param, param)}: refused by {model} ({', '.join(info.families)})")
        if info.token_limit_field == "max_completion_tokens" and "max_tokens" in body and "/" not in model:
            out.append(f"max_tokens: {model} takes max_completion_tokens")
    return out


def anthropic_messages(body: Mapping[str, Any], beta: bool) -> list[str]:
    adapter, known = _anthropic(beta)
    out = [
        f"{k}: not a Messages parameter"
        for k in body
        if k not in known | set(_ANTHROPIC_SAMPLING) | {"stream"}
    ]
    out += _errors(adapter, _strip(body, set(_ANTHROPIC_SAMPLING) | {"stream"}), "")
    for key, typ in _ANTHROPIC_SAMPLING.items():
        if key in body and not isinstance(body[key], typ | int if typ is float else typ):
            out.append(f"{key}: expected {typ.__name__}")
    model = str(body.get("model") or "")
    info = catalogue.shipped().lookup(model)
    thinking = body.get("thinking") or {}
    on = isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive")
    if on and thinking.get("type") == "enabled":
        budget = thinking.get("budget_tokens")
        if not isinstance(budget, int) or budget < 1024 or budget >= int(body.get("max_tokens") or 0):
            out.append("thinking.budget_tokens: must be at least 1024 and below max_tokens")
    temperature = body.get("temperature")
    if isinstance(temperature, int | float) and not 0 <= temperature <= 1:
        out.append("temperature: must be between 0 and 1")
    if info is None:
        return out
    if info.structured_output == "instruction" and (body.get("output_config") or {}).get("format"):
        out.append(f"output_config.format: {model} has no structured outputs")
    for group in info.rules.exclusive:
        given = [p for p in group if p in body]
        if len(given) > 1:
            out.append(f"{' and '.join(given)}: cannot both be specified for {model}")
    out += [f"{p}: refused by {model}" for p in info.rules.unsupported if p in body]
    if on and info.rules.thinking_temperature is not None:
        if temperature is not None and temperature != info.rules.thinking_temperature:
            out.append("temperature: may only be 1 with thinking on")
        top_p = body.get("top_p")
        if top_p is not None and top_p < (info.rules.thinking_top_p_min or 0):
            out.append("top_p: must be at least 0.95 with thinking on")
        out += [f"{p}: not accepted with thinking on" for p in info.rules.thinking_unsupported if p in body]
        if (body.get("tool_choice") or {}).get("type") in ("any", "tool"):
            out.append("tool_choice: thinking may not be enabled when tool_choice forces tool use")
    return out


def gemini_generate(body: Mapping[str, Any]) -> list[str]:
    out = [f"{k}: not a generateContent field" for k in body if k not in _GEMINI_TOP]
    for key, adapter in _gemini().items():
        if key in body:
            out += _errors(adapter, body[key], key)
    gen = body.get("generationConfig") or {}
    if "responseSchema" in gen and "responseJsonSchema" in gen:
        out.append("generationConfig: responseSchema and responseJsonSchema are exclusive")
    if ("responseSchema" in gen or "responseJsonSchema" in gen) and gen.get(
        "responseMimeType"
    ) != "application/json":
        out.append("generationConfig.responseMimeType: must be application/json with a response schema")
    return out


def problems(record: Mapping[str, Any]) -> list[str]:
    """What the real API would refuse in one recorded upstream request (`/_fake/requests` shape)."""
    path = str(record.get("path") or "")
    body = record.get("body")
    if record.get("method") != "POST" or not isinstance(body, dict):
        return []
    headers = record.get("headers") or {}
    if path.endswith("/chat/completions"):
        found = openai_chat(body)
    elif path.endswith("/v1/responses"):
        found = openai_typed(body, "responses")
    elif path.endswith("/v1/embeddings"):
        found = openai_typed(body, "embeddings")
    elif path.endswith("/v1/messages"):
        found = anthropic_messages(body, beta=bool(headers.get("anthropic-beta")))
    elif path.endswith((":generateContent", ":streamGenerateContent")):
        found = gemini_generate(body)
    else:
        return []
    return [f"{path}: {p}" for p in found]
