"""OpenAI Chat Completions as an ingress format: `POST /v1/chat/completions`.

Requests become InferenceRequests (parameters the canonical shape has no field for ride along in
`provider_config`, which OpenAI-type providers forward and others ignore); answers and streams are
rendered exactly as the official `openai` SDK expects them.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from ensemble import error_types
from ensemble.api.common import convert, decode_object, note_omitted, optional
from ensemble.errors import EnsembleError, InvalidRequest
from ensemble.structured_output import from_openai
from ensemble.types import (
    AudioContent,
    ContentBlock,
    DocumentContent,
    FinishReason,
    ImageContent,
    InferenceRequest,
    InferenceResponse,
    MediaSource,
    Message,
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
    Usage,
)

_FINISH_OUT: dict[FinishReason, str] = {
    "stop": "stop",
    "length": "length",
    "tool_use": "tool_calls",
    "content_filter": "content_filter",
    "error": "stop",
}

_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "tool": "tool"}

# Consumed here; everything else unknown to the canonical request is forwarded in provider_config.
_HANDLED = {
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "stop",
    "tools",
    "tool_choice",
    "stream",
    "stream_options",
    "n",
    "response_format",
}


def _media_from_url(url: str) -> MediaSource:
    if url.startswith("data:"):
        header, _, data = url.partition(",")
        media_type = header[5:].split(";")[0] or None
        return MediaSource(type="base64", media_type=media_type, data=data)
    return MediaSource(type="url", url=url)


def _part(part: Any, where: str) -> ContentBlock:
    if not isinstance(part, dict):
        raise InvalidRequest(f"{where}: expected a content part object", param="messages")
    kind = part.get("type")
    if kind == "text":
        return TextContent(text=convert(part.get("text"), str, f"{where}.text"))
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        return ImageContent(source=_media_from_url(convert(url, str, f"{where}.image_url.url")))
    if kind == "input_audio":
        audio = part.get("input_audio") or {}
        fmt = audio.get("format", "wav") if isinstance(audio, dict) else "wav"
        data = audio.get("data") if isinstance(audio, dict) else None
        return AudioContent(
            source=MediaSource(
                type="base64", media_type=f"audio/{fmt}", data=convert(data, str, f"{where}.input_audio.data")
            )
        )
    if kind == "file":
        file = part.get("file") or {}
        data = file.get("file_data") if isinstance(file, dict) else None
        return DocumentContent(source=_media_from_url(convert(data, str, f"{where}.file.file_data")))
    raise InvalidRequest(f"{where}.type: unsupported content part type {kind!r}", param="messages")


def _message(raw: Any, i: int) -> Message:
    where = f"messages[{i}]"
    if not isinstance(raw, dict):
        raise InvalidRequest(f"{where}: expected an object", param="messages")
    role = _ROLES.get(raw.get("role"))  # type: ignore[arg-type]
    if role is None:
        raise InvalidRequest(
            f"{where}.role: must be one of system, developer, user, assistant, tool", param="messages"
        )
    content = raw.get("content")
    blocks: str | list[ContentBlock]
    if content is None:
        blocks = ""
    elif isinstance(content, str):
        blocks = content
    elif isinstance(content, list):
        blocks = [_part(p, f"{where}.content[{j}]") for j, p in enumerate(content)]
    else:
        raise InvalidRequest(
            f"{where}.content: expected a string or a list of content parts", param="messages"
        )
    tool_calls = None
    call_signature: str | None = None
    if raw.get("tool_calls"):
        calls = raw["tool_calls"]
        if not isinstance(calls, list):
            raise InvalidRequest(f"{where}.tool_calls: expected a list", param="messages")
        tool_calls = []
        for j, c in enumerate(calls):
            fn = c.get("function") if isinstance(c, dict) else None
            if not isinstance(fn, dict):
                raise InvalidRequest(
                    f"{where}.tool_calls[{j}].function: expected an object", param="messages"
                )
            args = fn.get("arguments") or "{}"
            if j == 0:
                call_signature = _thought_signature(c)
            tool_calls.append(
                ToolCall(
                    id=convert(c.get("id", ""), str, f"{where}.tool_calls[{j}].id"),
                    name=convert(fn.get("name"), str, f"{where}.tool_calls[{j}].function.name"),
                    arguments=convert(args, str, f"{where}.tool_calls[{j}].function.arguments"),
                )
            )
    signature = _thought_signature(raw) if role == "assistant" else None
    if signature or call_signature:
        # Gemini thought signatures handed back (see render_response): each goes on a thinking
        # block right before the part it belongs to, as the canonical answer had it.
        listed: list[ContentBlock] = [TextContent(text=blocks)] if isinstance(blocks, str) and blocks else []
        if not isinstance(blocks, str):
            listed = blocks
        if signature:
            listed = [ThinkingContent(thinking="", signature=signature), *listed]
        if call_signature:
            listed.append(ThinkingContent(thinking="", signature=call_signature))
        blocks = listed
    return Message(
        role=role,  # type: ignore[arg-type]
        content=blocks,
        tool_calls=tool_calls,
        tool_call_id=raw.get("tool_call_id") if role == "tool" else None,
        name=raw.get("name") if isinstance(raw.get("name"), str) else None,
    )


def _thought_signature(obj: dict[str, Any]) -> str | None:
    """`extra_content.google.thought_signature`: where Google's own OpenAI-compatible API puts a
    Gemini thought signature, on an assistant message or a tool call."""
    extra = obj.get("extra_content")
    google = extra.get("google") if isinstance(extra, dict) else None
    sig = google.get("thought_signature") if isinstance(google, dict) else None
    return sig if isinstance(sig, str) and sig else None


def _google_extra(signature: str) -> dict[str, Any]:
    return {"google": {"thought_signature": signature}}


def _signatures(blocks: list[Any]) -> tuple[str | None, dict[int, str]]:
    """Gemini thought signatures in an answer (signature-only thinking blocks, each right before
    the part it came on): (the message's, {tool call position: its own})."""
    pending: str | None = None
    message: str | None = None
    calls: dict[int, str] = {}
    position = 0
    for b in blocks:
        if isinstance(b, ThinkingBlock):
            if not b.thinking and b.signature:
                pending = b.signature
        elif isinstance(b, ToolCallBlock):
            if pending:
                calls[position] = pending
                pending = None
            position += 1
        elif pending:
            message, pending = pending, None
    return message or pending, calls


def _url_citations(blocks: list[Any]) -> list[dict[str, Any]]:
    """A text block's web sources (Anthropic web search citations) as OpenAI's `url_citation`
    annotations, spanning that block's text in the joined content."""
    out: list[dict[str, Any]] = []
    position = 0
    for b in blocks:
        if not isinstance(b, TextBlock):
            continue
        for c in b.citations or ():
            if isinstance(c.get("url"), str):
                span = {"start_index": position, "end_index": position + len(b.text)}
                out.append(
                    {
                        "type": "url_citation",
                        "url_citation": {**span, "title": c.get("title") or "", "url": c["url"]},
                    }
                )
        position += len(b.text)
    return out


def parse_request(body: bytes) -> tuple[InferenceRequest, bool]:
    """(request, include_usage) from a chat.completions body."""
    data = decode_object(body)
    if "model" not in data:
        raise InvalidRequest("model: required field is missing", param="model")
    messages = data.get("messages")
    if not isinstance(messages, list):
        raise InvalidRequest("messages: required, and must be a list of messages", param="messages")
    n = data.get("n")
    if n not in (None, 1):
        raise InvalidRequest("n: only n=1 is supported", param="n")
    stop = data.get("stop")
    tools = None
    if data.get("tools") is not None:
        raw_tools = data["tools"]
        if not isinstance(raw_tools, list):
            raise InvalidRequest("tools: expected a list", param="tools")
        tools = []
        for i, t in enumerate(raw_tools):
            fn = t.get("function") if isinstance(t, dict) else None
            if not isinstance(fn, dict):
                raise InvalidRequest(f"tools[{i}].function: expected an object", param="tools")
            tools.append(convert(fn, ToolDefinition, f"tools[{i}].function"))
    choice = data.get("tool_choice")
    tool_choice: Any = None
    if isinstance(choice, str):
        if choice not in ("auto", "none", "required"):
            raise InvalidRequest(
                "tool_choice: must be auto, none, required or a function", param="tool_choice"
            )
        tool_choice = choice
    elif isinstance(choice, dict):
        fn = choice.get("function")
        name = fn.get("name") if isinstance(fn, dict) else None
        tool_choice = ToolChoiceNamed(name=convert(name, str, "tool_choice.function.name"))
    elif choice is not None:
        raise InvalidRequest("tool_choice: must be a string or an object", param="tool_choice")
    max_tokens = data.get("max_completion_tokens", data.get("max_tokens"))
    stream_options = data.get("stream_options") or {}
    if not isinstance(stream_options, dict):
        raise InvalidRequest("stream_options: expected an object", param="stream_options")
    extras = {k: v for k, v in data.items() if k not in _HANDLED}
    request = InferenceRequest(
        model=convert(data["model"], str, "model"),
        messages=[_message(m, i) for i, m in enumerate(messages)],
        max_tokens=optional(max_tokens, int, "max_tokens"),
        temperature=optional(data.get("temperature"), float, "temperature"),
        top_p=optional(data.get("top_p"), float, "top_p"),
        stop_sequences=[stop] if isinstance(stop, str) else optional(stop, list[str], "stop"),
        tools=tools,
        tool_choice=tool_choice,
        stream=convert(data.get("stream", False) or False, bool, "stream"),
        provider_config=extras or None,
        response_format=from_openai(data.get("response_format")),
    )
    return request, bool(stream_options.get("include_usage"))


def _usage(u: Usage | InferenceResponse) -> dict[str, Any]:
    if isinstance(u, InferenceResponse):
        inp, out, cached, reasoning = (
            u.input_tokens,
            u.output_tokens,
            u.cached_prompt_tokens,
            u.reasoning_tokens,
        )
    else:
        inp, out, cached, reasoning = u.input_tokens, u.output_tokens, u.cached_tokens, u.reasoning_tokens
    usage: dict[str, Any] = {
        "prompt_tokens": inp,
        "completion_tokens": out,
        "total_tokens": inp + out,
        "prompt_tokens_details": {"cached_tokens": cached},
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    }
    if isinstance(u, InferenceResponse):
        usage["cost"] = float(u.cost)  # USD, as OpenRouter reports it; exact in x-ensemble-cost-usd
    return usage


def completion_id(request_id: str) -> str:
    return "chatcmpl-" + request_id.removeprefix("req_")


def render_response(r: InferenceResponse) -> bytes:
    note_omitted(r.blocks, "OpenAI", r.id)
    text = "".join(b.text for b in r.blocks if isinstance(b, TextBlock))
    calls: list[dict[str, Any]] = [
        {
            "id": b.tool_call.id,
            "type": "function",
            "function": {"name": b.tool_call.name, "arguments": b.tool_call.raw_arguments or "{}"},
        }
        for b in r.blocks
        if isinstance(b, ToolCallBlock)
    ]
    signature, call_signatures = _signatures(r.blocks)
    for position, sig in call_signatures.items():
        calls[position]["extra_content"] = _google_extra(sig)
    message: dict[str, Any] = {
        "role": "assistant",
        "content": text or (None if calls else ""),
        "refusal": None,
    }
    if calls:
        message["tool_calls"] = calls
    thinking = "".join(b.thinking for b in r.blocks if isinstance(b, ThinkingBlock))
    if thinking:
        message["reasoning_content"] = thinking
    if signature:
        message["extra_content"] = _google_extra(signature)
    annotations = _url_citations(r.blocks)
    if annotations:
        message["annotations"] = annotations
    body = {
        "id": completion_id(r.id),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": r.model,
        "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": _FINISH_OUT[r.finish_reason]}
        ],
        "usage": _usage(r),
        "system_fingerprint": None,
    }
    return orjson.dumps(body)


class ChunkWriter:
    """Renders deltas as chat.completion.chunk SSE frames.

    Every chunk of one stream shares its id/created/model head, so the bytes around the delta are
    built once per stream and each token costs one small `orjson.dumps` of the delta alone."""

    def __init__(self, request_id: str, model: str, include_usage: bool) -> None:
        head = orjson.dumps(
            {
                "id": completion_id(request_id),
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model,
                "system_fingerprint": None,
            }
        )[:-1]  # without the closing brace: choices/usage follow
        self._open = b"data: " + head + b',"choices":[{"index":0,"delta":'
        self._close = b',"logprobs":null,"finish_reason":null}]}\n\n'
        self._usage_open = b"data: " + head + b',"choices":[],"usage":'
        self._include_usage = include_usage
        self._tool_slots: dict[int, int] = {}
        # Gemini thought signatures (see _signatures): blocks that carried thinking text are another
        # provider's signed reasoning, not these.
        self._thought_text: set[int] = set()
        self._signature = ""
        self._message_signature = ""

    def _frame(self, delta: dict[str, Any]) -> bytes:
        return self._open + orjson.dumps(delta) + self._close

    def start(self) -> bytes:
        return self._frame({"role": "assistant", "content": ""})

    def render(self, delta: StreamDelta) -> bytes | None:
        if isinstance(delta, TextDelta):
            if self._signature:
                self._message_signature, self._signature = self._signature, ""
            return self._open + b'{"content":' + orjson.dumps(delta.text) + b"}" + self._close
        if isinstance(delta, ThinkingDelta):  # as in the JSON answer: reasoning_content (xAI/DeepSeek style)
            if delta.thinking:
                self._thought_text.add(delta.index)
                return self._frame({"reasoning_content": delta.thinking})
            if delta.signature and delta.index not in self._thought_text:
                self._signature += delta.signature
            return None
        if isinstance(delta, ToolCallStart):
            slot = self._tool_slots[delta.index] = len(self._tool_slots)
            call: dict[str, Any] = {
                "index": slot,
                "id": delta.id,
                "type": "function",
                "function": {"name": delta.name, "arguments": ""},
            }
            if self._signature:
                call["extra_content"] = _google_extra(self._signature)
                self._signature = ""
            return self._frame({"tool_calls": [call]})
        if isinstance(delta, ToolCallArgs):
            slot = self._tool_slots.get(delta.index, 0)
            return self._frame({"tool_calls": [{"index": slot, "function": {"arguments": delta.fragment}}]})
        return None

    def finish(self, response: InferenceResponse) -> bytes:
        note_omitted(response.blocks, "OpenAI", response.id)
        reason = orjson.dumps(_FINISH_OUT[response.finish_reason])
        signature = self._signature or self._message_signature
        out = self._frame({"extra_content": _google_extra(signature)}) if signature else b""
        annotations = _url_citations(response.blocks)
        if annotations:
            out += self._frame({"annotations": annotations})
        out += self._open + b'{},"logprobs":null,"finish_reason":' + reason + b"}]}\n\n"
        if self._include_usage:
            out += self._usage_open + orjson.dumps(_usage(response)) + b"}\n\n"
        return out + b"data: [DONE]\n\n"


def error_body(error: EnsembleError, kind: str) -> bytes:
    """OpenAI's error shape; `kind` is the type error_types gives this error for OpenAI clients."""
    return orjson.dumps(
        {"error": {"message": error.message, "type": kind, "param": error.param, "code": error.code}}
    )


def sse_error(error: EnsembleError) -> bytes:
    return b"data: " + error_body(error, error_types.render_as("openai", error)[0]) + b"\n\n"
