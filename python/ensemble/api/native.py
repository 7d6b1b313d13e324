"""The native API (see the README's routes): snake_case (or camelCase) requests, InferenceResponse, block/done/error SSE."""

from __future__ import annotations

from typing import Any

import msgspec
import orjson

from ensemble import error_types
from ensemble.api.common import convert, decode_object
from ensemble.errors import EnsembleError, InvalidRequest, ProviderError
from ensemble.types import (
    InferenceRequest,
    InferenceResponse,
    RedactedThinkingDelta,
    ServerToolDelta,
    StreamDelta,
    TextDelta,
    ThinkingDelta,
    ToolCallArgs,
    ToolCallStart,
)

CAMEL_ALIASES = {
    "maxTokens": "max_tokens",
    "topP": "top_p",
    "stopSequences": "stop_sequences",
    "sessionId": "session_id",
    "providerConfig": "provider_config",
    "toolChoice": "tool_choice",
}


def normalise_aliases(data: dict[str, Any]) -> dict[str, Any]:
    for camel, snake in CAMEL_ALIASES.items():
        if camel in data:
            if snake in data:
                raise InvalidRequest(f"{camel} and {snake} are the same field; send only one", param=snake)
            data[snake] = data.pop(camel)
    return data


def parse_request(body: bytes) -> InferenceRequest:
    return parse_fields(decode_object(body))


def parse_fields(data: dict[str, Any]) -> InferenceRequest:
    """Fields of a native request (also used by the WebSocket route, whose messages carry them)."""
    data = normalise_aliases(data)
    if "model" not in data:
        raise InvalidRequest("model: required field is missing", param="model")
    if "messages" not in data:
        raise InvalidRequest("messages: required field is missing", param="messages")
    tool_choice = data.get("tool_choice")
    if isinstance(tool_choice, dict) and set(tool_choice) == {"type", "name"}:  # {"type": "tool", "name"}
        data["tool_choice"] = {"name": tool_choice["name"]}
    return convert(data, InferenceRequest)


_encode = msgspec.json.Encoder().encode


def render_response(response: InferenceResponse) -> bytes:
    return _encode(response)


class BlockEvents:
    """Renders deltas as `event: block` SSE frames: each block delta carries its `index`."""

    def render(self, delta: StreamDelta) -> bytes | None:
        payload = block_payload(delta)
        if payload is None:
            return None
        return b"event: block\ndata: " + orjson.dumps(payload) + b"\n\n"


def block_payload(delta: StreamDelta) -> dict[str, Any] | None:
    """The EventBlock delta for a stream delta (None for deltas that carry no block content)."""
    if isinstance(delta, TextDelta):
        payload: dict[str, Any] = {"type": "text", "index": delta.index, "text": delta.text}
        if delta.citation is not None:
            payload["citation"] = delta.citation
    elif isinstance(delta, ToolCallStart):
        payload = {
            "type": "tool_call",
            "index": delta.index,
            "tool_call": {"id": delta.id, "name": delta.name, "raw_arguments": ""},
        }
    elif isinstance(delta, ToolCallArgs):
        payload = {
            "type": "tool_call",
            "index": delta.index,
            "tool_call": {"raw_arguments": delta.fragment},
        }
    elif isinstance(delta, RedactedThinkingDelta):
        payload = {"type": "redacted_thinking", "index": delta.index, "data": delta.data}
    elif isinstance(delta, ServerToolDelta):
        payload = {"type": "server_tool", "index": delta.index, "block": delta.block}
    elif isinstance(delta, ThinkingDelta):
        payload = {"type": "thinking", "index": delta.index, "thinking": delta.thinking}
        if delta.signature:
            payload["signature"] = delta.signature
    else:
        return None
    return payload


def sse_done(response: InferenceResponse) -> bytes:
    return b"event: done\ndata: " + _encode(response) + b"\n\n"


def error_payload(error: EnsembleError, request_id: str, kind: str | None = None) -> dict[str, Any]:
    """The native error object; `kind` is the canonical type (error_types.resolve), error.type if not given."""
    return {
        "error": {
            "type": kind or error.type,
            "message": error.message,
            "code": error.code,
            "request_id": request_id,
        }
    }


def sse_error(error: EnsembleError, request_id: str) -> bytes:
    kind, status = error_types.resolve(error)
    payload = error_payload(error, request_id, kind)
    retryable = isinstance(error, ProviderError) and error.retryable
    payload["error"]["retryable"] = retryable or status in (429, 503, 504)
    return b"event: error\ndata: " + orjson.dumps(payload) + b"\n\n"
