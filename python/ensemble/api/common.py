"""Decoding helpers shared by every ingress format: JSON bodies in, field-named 400s out."""

from __future__ import annotations

import logging
import re
from typing import Any, TypeVar

import msgspec
import orjson

from ensemble.errors import InvalidRequest
from ensemble.types import EventBlock, InferenceRequest, ServerToolBlock

log = logging.getLogger("ensemble.api")

T = TypeVar("T")

_AT_PATH = re.compile(r"\s*- at `\$(?P<path>[^`]*)`$")


def decode_object(body: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 that says what is wrong with it."""
    if not body.strip():
        raise InvalidRequest("request body is empty; send a JSON object", code="empty_body")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        reason = "not valid UTF-8" if "utf-8" in str(e).lower() else f"malformed JSON: {e}"
        raise InvalidRequest(f"request body is {reason}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise InvalidRequest(
            f"request body must be a JSON object, got {type(data).__name__}", code="invalid_json"
        )
    return data


def field_error(e: msgspec.ValidationError, prefix: str = "") -> InvalidRequest:
    """Turn msgspec's 'Expected `int`, got `str` - at `$.max_tokens`' into 'max_tokens: expected int, got str'."""
    text = str(e)
    m = _AT_PATH.search(text)
    path = ""
    if m:
        path = m.group("path").lstrip(".")
        text = text[: m.start()]
    path = f"{prefix}.{path}".strip(".") if prefix else path
    text = text.replace("`", "")
    if text.startswith("Object contains unknown field "):
        name = text.removeprefix("Object contains unknown field ")
        path = f"{path}.{name}".strip(".") if path else name
        text = "unknown field"
    elif text.startswith("Object missing required field "):
        name = text.removeprefix("Object missing required field ")
        path = f"{path}.{name}".strip(".") if path else name
        text = "required field is missing"
    message = f"{path}: {text[0].lower() + text[1:]}" if path else text
    return InvalidRequest(message, code="invalid_field", param=path.split(".")[0].split("[")[0] or None)


def convert(data: Any, typ: type[T], prefix: str = "") -> T:
    try:
        return msgspec.convert(data, typ)
    except msgspec.ValidationError as e:
        raise field_error(e, prefix) from None


def optional(data: Any, typ: type[T], prefix: str = "") -> T | None:
    """`convert` to `typ`, passing None through. Cheaper than converting to `typ | None`: msgspec
    builds its decoder for a union on every call (about 1 µs each, several per request)."""
    return None if data is None else convert(data, typ, prefix)


def estimate_tokens(request: InferenceRequest) -> int:
    """count_tokens / countTokens: Ensemble's own estimate (about 4 characters a token, tool
    schemas included), the same whichever provider serves the model."""
    chars = 0
    for m in request.messages:
        chars += len(m.text())
        for c in m.tool_calls or ():
            chars += len(c.arguments if isinstance(c.arguments, str) else orjson.dumps(c.arguments))
    for t in request.tools or ():
        chars += len(t.name) + len(t.description) + len(orjson.dumps(t.parameters))
    return max(1, -(-chars // 4))


def note_omitted(blocks: list[EventBlock], fmt: str, request_id: str) -> None:
    """Server-tool blocks (a provider's own web search, code execution…) have no shape in OpenAI's
    or Gemini's format: they are left out of those answers, and the log says so."""
    kinds = sorted({str(b.block.get("type")) for b in blocks if isinstance(b, ServerToolBlock)})
    if kinds:
        log.info(
            "request %s: %s server-tool block(s) (%s) not shown to the %s-format client",
            request_id,
            sum(isinstance(b, ServerToolBlock) for b in blocks),
            ", ".join(kinds),
            fmt,
        )
