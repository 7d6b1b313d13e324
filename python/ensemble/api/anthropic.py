"""Anthropic Messages as an ingress format: `POST /v1/messages` (JSON and SSE) and
`POST /v1/messages/count_tokens`.

Requests become InferenceRequests: `system` → system message, `role: "system"` turns inside
`messages` → system messages at their place (mid-conversation system messages, as Claude Code sends
them), `tool_use` blocks → assistant tool_calls, `tool_result` blocks → tool messages, thinking /
redacted_thinking and server-tool blocks are kept for the next turn, Anthropic-defined tools
(`web_search_20250305`, …) ride verbatim for Claude (docs/formats.md). Anthropic-only parameters (`thinking`, `top_k`, `metadata`, `service_tier`) ride
in `provider_config`, where the Anthropic adapter takes them and others ignore or translate them.
Answers and streams are rendered with the event sequence the official `anthropic` SDK expects:
message_start, ping, content_block_start / _delta / _stop per block, message_delta, message_stop.
"""

from __future__ import annotations

from typing import Any

import orjson

from ensemble import error_types
from ensemble.api.common import convert, decode_object, optional
from ensemble.errors import EnsembleError, InvalidRequest
from ensemble.providers.anthropic import PASSTHROUGH, SERVER_TOOLS, is_server_tool_block
from ensemble.structured_output import from_anthropic
from ensemble.types import (
    ContentBlock,
    DocumentContent,
    FinishReason,
    ImageContent,
    InferenceRequest,
    InferenceResponse,
    MediaSource,
    Message,
    RedactedThinkingBlock,
    RedactedThinkingContent,
    RedactedThinkingDelta,
    ResponseFormat,
    ServerToolBlock,
    ServerToolContent,
    ServerToolDelta,
    StreamDelta,
    TextBlock,
    TextContent,
    TextDelta,
    ThinkingBlock,
    ThinkingContent,
    ThinkingDelta,
    ToolCall,
    ToolCallArgs,
    ToolCallBlock,
    ToolCallStart,
    ToolChoiceNamed,
    ToolDefinition,
    UsageDelta,
)

STOP_OUT: dict[FinishReason, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_use": "tool_use",
    "content_filter": "refusal",
    "error": "end_turn",
}

# Carried to the provider in provider_config: exactly the keys the Anthropic adapter forwards
# (sorted, so provider_config is built in a stable order).
_EXTRAS = tuple(sorted(PASSTHROUGH))
_KNOWN = {
    "model",
    "messages",
    "system",
    "max_tokens",
    "temperature",
    "top_p",
    "stop_sequences",
    "stream",
    "tools",
    "tool_choice",
    "output_format",
    *_EXTRAS,
}


def _source(raw: Any, where: str) -> MediaSource | str:
    """A media source; a plain-text document source comes back as its text."""
    if not isinstance(raw, dict):
        raise InvalidRequest(f"{where}.source: expected an object", param="messages")
    kind = raw.get("type")
    if kind == "base64":
        return MediaSource(
            type="base64",
            media_type=convert(raw.get("media_type"), str, f"{where}.source.media_type"),
            data=convert(raw.get("data"), str, f"{where}.source.data"),
        )
    if kind == "url":
        return MediaSource(type="url", url=convert(raw.get("url"), str, f"{where}.source.url"))
    if kind == "text":
        return convert(raw.get("data"), str, f"{where}.source.data")
    raise InvalidRequest(
        f"{where}.source.type: {kind!r} is not supported (use base64, url or text)", param="messages"
    )


def _cache_control(raw: dict[str, Any], where: str) -> dict[str, Any] | None:
    return optional(raw.get("cache_control"), dict[str, Any], f"{where}.cache_control")


def _block(raw: dict[str, Any], where: str) -> ContentBlock:
    kind = raw.get("type")
    cache = _cache_control(raw, where)
    if kind == "text":
        return TextContent(text=convert(raw.get("text"), str, f"{where}.text"), cache_control=cache)
    if kind == "image":
        src = _source(raw.get("source"), where)
        if isinstance(src, str):
            raise InvalidRequest(f"{where}.source.type: images cannot be text", param="messages")
        return ImageContent(source=src, cache_control=cache)
    if kind == "document":
        src = _source(raw.get("source"), where)
        if isinstance(src, str):
            return TextContent(text=src, cache_control=cache)
        return DocumentContent(source=src, cache_control=cache)
    if kind == "thinking":
        return ThinkingContent(
            thinking=convert(raw.get("thinking"), str, f"{where}.thinking"),
            signature=optional(raw.get("signature"), str, f"{where}.signature"),
        )
    if kind == "redacted_thinking":
        return RedactedThinkingContent(data=convert(raw.get("data"), str, f"{where}.data"))
    if is_server_tool_block(kind):  # a server tool's call or result, handed back as it came
        return ServerToolContent(block=raw)
    raise InvalidRequest(f"{where}.type: unsupported content block type {kind!r}", param="messages")


def _tool_result(raw: dict[str, Any], where: str) -> Message:
    content = raw.get("content")
    blocks: str | list[ContentBlock]
    if content is None:
        blocks = ""
    elif isinstance(content, str):
        blocks = content
    elif isinstance(content, list):
        blocks = []
        for j, b in enumerate(content):
            if not isinstance(b, dict):
                raise InvalidRequest(f"{where}.content[{j}]: expected an object", param="messages")
            blocks.append(_block(b, f"{where}.content[{j}]"))
    else:
        raise InvalidRequest(f"{where}.content: expected a string or a list of blocks", param="messages")
    return Message(
        role="tool",
        content=blocks,
        tool_call_id=convert(raw.get("tool_use_id"), str, f"{where}.tool_use_id"),
        is_error=optional(raw.get("is_error"), bool, f"{where}.is_error"),
    )


def _messages(raw: Any, i: int) -> list[Message]:
    where = f"messages[{i}]"
    if not isinstance(raw, dict):
        raise InvalidRequest(f"{where}: expected an object", param="messages")
    role = raw.get("role")
    if role == "system":
        if i == 0:  # as Anthropic's API: instructions from the start belong in `system`
            raise InvalidRequest(
                f"{where}.role: a system turn cannot come first; use the top-level system parameter",
                param="messages",
            )
        return [_system_turn(raw.get("content"), where)]
    if role not in ("user", "assistant"):
        raise InvalidRequest(f"{where}.role: must be user, assistant or system", param="messages")
    content = raw.get("content")
    if isinstance(content, str):
        return [Message(role=role, content=content)]
    if not isinstance(content, list):
        raise InvalidRequest(f"{where}.content: expected a string or a list of blocks", param="messages")
    out: list[Message] = []
    blocks: list[ContentBlock] = []
    calls: list[ToolCall] = []
    for j, b in enumerate(content):
        at = f"{where}.content[{j}]"
        if not isinstance(b, dict):
            raise InvalidRequest(f"{at}: expected an object", param="messages")
        kind = b.get("type")
        if kind == "tool_use":
            if role != "assistant":
                raise InvalidRequest(f"{at}: tool_use blocks belong to assistant messages", param="messages")
            args = b.get("input")
            calls.append(
                ToolCall(
                    id=convert(b.get("id"), str, f"{at}.id"),
                    name=convert(b.get("name"), str, f"{at}.name"),
                    arguments=convert(args if args is not None else {}, dict[str, Any], f"{at}.input"),
                )
            )
        elif kind == "tool_result":
            if role != "user":
                raise InvalidRequest(f"{at}: tool_result blocks belong to user messages", param="messages")
            out.append(_tool_result(b, at))
        else:
            blocks.append(_block(b, at))
    if blocks or calls or not out:
        out.append(Message(role=role, content=blocks, tool_calls=calls or None))
    return out


def _system_turn(content: Any, where: str) -> Message:
    """A mid-conversation `role: "system"` turn (Anthropic's feature, sent by Claude Code): text only."""
    if isinstance(content, str):
        return Message(role="system", content=content)
    if not isinstance(content, list):
        raise InvalidRequest(f"{where}.content: expected a string or a list of text blocks", param="messages")
    blocks: list[ContentBlock] = []
    for j, b in enumerate(content):
        if not isinstance(b, dict) or b.get("type") != "text":
            raise InvalidRequest(
                f"{where}.content[{j}]: system turns take only text blocks", param="messages"
            )
        blocks.append(
            TextContent(
                text=convert(b.get("text"), str, f"{where}.content[{j}].text"),
                cache_control=_cache_control(b, f"{where}.content[{j}]"),
            )
        )
    return Message(role="system", content=blocks)


def _system(raw: Any) -> list[Message]:
    if raw is None:
        return []
    if isinstance(raw, str):
        return [Message(role="system", content=raw)] if raw else []
    if isinstance(raw, list):
        texts = []
        for j, b in enumerate(raw):
            if not isinstance(b, dict) or b.get("type") != "text":
                raise InvalidRequest(f"system[{j}]: expected a text block", param="system")
            texts.append(
                TextContent(
                    text=convert(b.get("text"), str, f"system[{j}].text"),
                    cache_control=_cache_control(b, f"system[{j}]"),
                )
            )
        return [Message(role="system", content=list[ContentBlock](texts))] if texts else []
    raise InvalidRequest("system: expected a string or a list of text blocks", param="system")


def _tools(raw: Any) -> tuple[list[ToolDefinition] | None, list[dict[str, Any]]]:
    """(custom tools, Anthropic-defined tools such as web_search_20250305 kept verbatim for Claude)."""
    if raw is None:
        return None, []
    if not isinstance(raw, list):
        raise InvalidRequest("tools: expected a list", param="tools")
    tools = []
    defined: list[dict[str, Any]] = []
    for i, t in enumerate(raw):
        if not isinstance(t, dict):
            raise InvalidRequest(f"tools[{i}]: expected an object", param="tools")
        if t.get("type") not in (None, "custom"):
            if not isinstance(t.get("type"), str) or not isinstance(t.get("name"), str):
                raise InvalidRequest(
                    f"tools[{i}]: an Anthropic-defined tool needs a type and a name", param="tools"
                )
            defined.append(t)
            continue
        schema = t.get("input_schema")
        tools.append(
            ToolDefinition(
                name=convert(t.get("name"), str, f"tools[{i}].name"),
                description=convert(t.get("description") or "", str, f"tools[{i}].description"),
                parameters=convert(schema, dict[str, Any], f"tools[{i}].input_schema"),
                cache_control=_cache_control(t, f"tools[{i}]"),
            )
        )
    return tools or None, defined


def _tool_choice(raw: Any) -> Any:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise InvalidRequest('tool_choice: expected an object such as {"type": "auto"}', param="tool_choice")
    kind = raw.get("type")
    if kind == "tool":
        return ToolChoiceNamed(name=convert(raw.get("name"), str, "tool_choice.name"))
    mapped = {"auto": "auto", "any": "required", "none": "none"}.get(kind)  # type: ignore[arg-type]
    if mapped is None:
        raise InvalidRequest("tool_choice.type: must be auto, any, tool or none", param="tool_choice")
    return mapped


def parse_request(body: bytes, *, count_only: bool = False) -> InferenceRequest:
    data = decode_object(body)
    for name in ("model", "messages") if count_only else ("model", "messages", "max_tokens"):
        if name not in data:
            raise InvalidRequest(f"{name}: required field is missing", param=name)
    unknown = sorted(k for k in data if k not in _KNOWN)
    if unknown and not count_only:
        raise InvalidRequest(f"{unknown[0]}: unknown field", param=unknown[0])
    raw_messages = data["messages"]
    if not isinstance(raw_messages, list):
        raise InvalidRequest("messages: expected a list of messages", param="messages")
    messages = _system(data.get("system"))
    for i, m in enumerate(raw_messages):
        messages += _messages(m, i)
    extras = {k: data[k] for k in _EXTRAS if data.get(k) is not None}
    tools, defined = _tools(data.get("tools"))
    if defined:
        extras[SERVER_TOOLS] = defined
    response_format = _output_format(data, extras)
    choice = data.get("tool_choice")
    if isinstance(choice, dict) and choice.get("disable_parallel_tool_use") is True:
        extras["parallel_tool_calls"] = False  # OpenAI's name; the Anthropic adapter maps it back
    return InferenceRequest(
        model=convert(data["model"], str, "model"),
        messages=messages,
        max_tokens=optional(data.get("max_tokens"), int, "max_tokens"),
        temperature=optional(data.get("temperature"), float, "temperature"),
        top_p=optional(data.get("top_p"), float, "top_p"),
        stop_sequences=optional(data.get("stop_sequences"), list[str], "stop_sequences"),
        tools=tools,
        tool_choice=_tool_choice(data.get("tool_choice")),
        stream=convert(data.get("stream") or False, bool, "stream"),
        provider_config=extras or None,
        response_format=response_format,
    )


def _output_format(data: dict[str, Any], extras: dict[str, Any]) -> ResponseFormat | None:
    """`output_config.format` (or the beta's `output_format`) as the canonical response format; the
    rest of output_config (effort) stays in provider_config."""
    config = extras.get("output_config")
    if isinstance(config, dict) and config.get("format") is not None:
        rest = {k: v for k, v in config.items() if k != "format"}
        if rest:
            extras["output_config"] = rest
        else:
            del extras["output_config"]
        return from_anthropic(config["format"], "output_config.format")
    return from_anthropic(data.get("output_format"), "output_format")


def message_id(request_id: str) -> str:
    return "msg_" + request_id.removeprefix("req_")


def _usage(input_tokens: int, output_tokens: int, cached: int, creation: int) -> dict[str, Any]:
    # Anthropic's input_tokens excludes the cache; the canonical one includes it.
    return {
        "input_tokens": max(input_tokens - cached - creation, 0),
        "cache_creation_input_tokens": creation,
        "cache_read_input_tokens": cached,
        "output_tokens": output_tokens,
    }


def stop_reason(r: InferenceResponse) -> str:
    """Anthropic's stop reason. An answer that stops on a server tool's block is Claude pausing a
    long server-tool turn (`pause_turn`): the client sends it back to let Claude continue."""
    if r.finish_reason == "stop" and r.blocks and isinstance(r.blocks[-1], ServerToolBlock):
        return "pause_turn"
    return STOP_OUT[r.finish_reason]


def render_response(r: InferenceResponse) -> bytes:
    content: list[dict[str, Any]] = []
    for b in r.blocks:
        if isinstance(b, TextBlock):
            text: dict[str, Any] = {"type": "text", "text": b.text}
            if b.citations:
                text["citations"] = b.citations
            content.append(text)
        elif isinstance(b, ThinkingBlock):
            content.append({"type": "thinking", "thinking": b.thinking, "signature": b.signature or ""})
        elif isinstance(b, RedactedThinkingBlock):
            content.append({"type": "redacted_thinking", "data": b.data})
        elif isinstance(b, ServerToolBlock):
            content.append(b.block)
        elif isinstance(b, ToolCallBlock):
            call = b.tool_call
            content.append({"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments})
    body = {
        "id": message_id(r.id),
        "type": "message",
        "role": "assistant",
        "model": r.model,
        "content": content,
        "stop_reason": stop_reason(r),
        "stop_sequence": None,
        "usage": _usage(r.input_tokens, r.output_tokens, r.cached_prompt_tokens, r.cache_creation_tokens),
    }
    return orjson.dumps(body)


def _event(name: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


class MessageEvents:
    """Renders canonical deltas as Messages SSE. message_start waits for the first delta so that an
    upstream reporting the prompt usage up front (Anthropic does) has it in message_start too."""

    def __init__(self, request_id: str, model: str) -> None:
        self._id = message_id(request_id)
        self._model = model
        self._started = False
        self._usage = UsageDelta()
        self._open: tuple[str, int] | None = None  # (kind, canonical index) of the open block
        self._next = 0  # Anthropic block index of the next block

    def _head(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        u = self._usage
        message: dict[str, Any] = {
            "id": self._id,
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": _usage(
                u.input_tokens or 0, u.output_tokens or 0, u.cached_tokens or 0, u.cache_creation_tokens or 0
            ),
        }
        return _event("message_start", {"type": "message_start", "message": message}) + _event(
            "ping", {"type": "ping"}
        )

    def _close(self) -> bytes:
        if self._open is None:
            return b""
        self._open = None
        index = self._next
        self._next += 1
        return _event("content_block_stop", {"type": "content_block_stop", "index": index})

    def _ensure(self, kind: str, index: int, block: dict[str, Any]) -> bytes:
        if self._open == (kind, index):
            return b""
        out = self._close()
        self._open = (kind, index)
        return out + _event(
            "content_block_start",
            {"type": "content_block_start", "index": self._next, "content_block": block},
        )

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return _event(
            "content_block_delta", {"type": "content_block_delta", "index": self._next, "delta": delta}
        )

    def start(self) -> bytes:
        return b""

    def render(self, delta: StreamDelta) -> bytes | None:
        if isinstance(delta, UsageDelta):
            for field in UsageDelta.__struct_fields__:
                value = getattr(delta, field)
                if value is not None:
                    setattr(self._usage, field, value)
            return None if self._started else self._head()
        out = self._head()
        if isinstance(delta, TextDelta):
            out += self._ensure("text", delta.index, {"type": "text", "text": ""})
            if delta.text:
                out += self._delta({"type": "text_delta", "text": delta.text})
            if delta.citation is not None:
                out += self._delta({"type": "citations_delta", "citation": delta.citation})
        elif isinstance(delta, ThinkingDelta):
            out += self._ensure(
                "thinking", delta.index, {"type": "thinking", "thinking": "", "signature": ""}
            )
            if delta.thinking:
                out += self._delta({"type": "thinking_delta", "thinking": delta.thinking})
            if delta.signature:
                out += self._delta({"type": "signature_delta", "signature": delta.signature})
        elif isinstance(delta, RedactedThinkingDelta):
            out += self._ensure("redacted", delta.index, {"type": "redacted_thinking", "data": delta.data})
            out += self._close()
        elif isinstance(delta, ServerToolDelta):
            # As Anthropic streams them: a server tool's call opens with `input: {}` and gets its
            # input as one input_json_delta; its results arrive whole in content_block_start.
            block = delta.block
            if "input" in block:
                out += self._ensure("server", delta.index, {**block, "input": {}})
                if block["input"]:
                    out += self._delta(
                        {"type": "input_json_delta", "partial_json": orjson.dumps(block["input"]).decode()}
                    )
            else:
                out += self._ensure("server", delta.index, block)
            out += self._close()
        elif isinstance(delta, ToolCallStart):
            out += self._ensure(
                "tool", delta.index, {"type": "tool_use", "id": delta.id, "name": delta.name, "input": {}}
            )
        # Tool-call arguments follow their start; fragments for a block already closed (never seen
        # from real providers) cannot be expressed in this format and are dropped here — the stored
        # response still has them.
        elif isinstance(delta, ToolCallArgs) and self._open == ("tool", delta.index) and delta.fragment:
            out += self._delta({"type": "input_json_delta", "partial_json": delta.fragment})
        return out or None

    def finish(self, response: InferenceResponse) -> bytes:
        out = self._head() + self._close()
        usage = _usage(
            response.input_tokens,
            response.output_tokens,
            response.cached_prompt_tokens,
            response.cache_creation_tokens,
        )
        out += _event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason(response), "stop_sequence": None},
                "usage": usage,
            },
        )
        return out + _event("message_stop", {"type": "message_stop"})


def error_body(error: EnsembleError, kind: str, request_id: str) -> bytes:
    """Anthropic's error shape; `kind` is the type error_types gives this error for Anthropic clients."""
    return orjson.dumps(
        {"type": "error", "error": {"type": kind, "message": error.message}, "request_id": request_id}
    )


def sse_error(error: EnsembleError) -> bytes:
    """The in-band `error` event of a stream that already started (an upstream `overloaded_error`
    mid-stream stays one)."""
    kind = error_types.render_as("anthropic", error)[0]
    return _event("error", {"type": "error", "error": {"type": kind, "message": error.message}})
