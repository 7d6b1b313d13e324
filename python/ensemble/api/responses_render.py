"""OpenAI Responses as an egress format: canonical answers as `response` objects (the event
stream that carries them is responses_events.py).

Output items, in the answer's block order: thinking → `reasoning` (summary text; the signature as
`encrypted_content` when the client asked for it with `include`), text → `message` with one
`output_text` part, tool call → `function_call`. Item ids derive from the request id and the
block's position, so the streamed items, the final object and a later `GET` agree.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from ensemble.api.responses import encode_encrypted
from ensemble.types import (
    EventBlock,
    InferenceResponse,
    TextBlock,
    ThinkingBlock,
    ToolCallBlock,
)

INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}

# The common answer (text only) as JSON from byte templates rather than dicts serialised whole; the
# field order and values are render()'s (tests/unit/test_responses_format.py holds them equal).
# head_fields, without the closing brace: id, created_at, model, previous_response_id, echo.
_HEAD = (
    b'{"id":%s,"object":"response","created_at":%d,"background":false,"model":%s,"previous_response_id":%s%s'
)
# A text item: `% (item id JSON, text JSON)`.
TEXT_ITEM = (
    b'{"id":%s,"type":"message","role":"assistant","status":"completed",'
    b'"content":[{"type":"output_text","text":%s,"annotations":[],"logprobs":[]}]}'
)
# final_fields of a text-only answer and the object's closing brace:
# `% (status, incomplete_details JSON, output items, usage numbers, cost JSON)`.
_TEXT_TAIL = (
    b',"status":"%s","error":null,"incomplete_details":%s,"output":[%s],"usage":{"input_tokens":%d,'
    b'"input_tokens_details":{"cached_tokens":%d,"cache_write_tokens":%d},"output_tokens":%d,'
    b'"output_tokens_details":{"reasoning_tokens":%d},"total_tokens":%d,"cost":%s}}'
)


def response_id(request_id: str) -> str:
    return "resp_" + request_id.removeprefix("req_")


def request_ids(resp_id: str) -> tuple[str, ...]:
    """The request ids a response id may stand for (generated ids carry `req_`, supplied ones not)."""
    rest = resp_id.removeprefix("resp_")
    return ("req_" + rest, rest) if resp_id.startswith("resp_") else (resp_id,)


def item_id(kind: str, base: str, index: int) -> str:
    return f"{kind}_{base}{index:02d}"


def base_of(request_id: str) -> str:
    return request_id.removeprefix("req_")


def usage(r: InferenceResponse) -> dict[str, Any]:
    return {
        "input_tokens": r.input_tokens,
        "input_tokens_details": {
            "cached_tokens": r.cached_prompt_tokens,
            "cache_write_tokens": r.cache_creation_tokens,
        },
        "output_tokens": r.output_tokens,
        "output_tokens_details": {"reasoning_tokens": r.reasoning_tokens},
        "total_tokens": r.input_tokens + r.output_tokens,
        "cost": float(r.cost),
    }


def reasoning_item(item_id: str, block: ThinkingBlock, include_encrypted: bool) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": item_id,
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": block.thinking}] if block.thinking else [],
    }
    if include_encrypted and block.signature:
        item["encrypted_content"] = encode_encrypted(block.origin, block.signature)
    return item


def message_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
    }


def call_item(
    item_id: str, call_id: str, name: str, arguments: str, status: str = "completed"
) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def output_items(blocks: list[EventBlock], request_id: str, include_encrypted: bool) -> list[dict[str, Any]]:
    base = base_of(request_id)
    out: list[dict[str, Any]] = []
    for i, block in enumerate(blocks):
        if isinstance(block, TextBlock):
            out.append(message_item(item_id("msg", base, i), block.text))
        elif isinstance(block, ThinkingBlock):
            out.append(reasoning_item(block.item_id or item_id("rs", base, i), block, include_encrypted))
        elif isinstance(block, ToolCallBlock):
            call = block.tool_call
            out.append(call_item(item_id("fc", base, i), call.id, call.name, call.raw_arguments or "{}"))
    return out


def head_fields(
    request_id: str, model: str, echo: dict[str, Any], previous_response_id: str | None, created_at: int
) -> dict[str, Any]:
    """The fields of a response object that stay the same while it is streamed."""
    return {
        "id": response_id(request_id),
        "object": "response",
        "created_at": created_at,
        "background": False,
        "model": model,
        "previous_response_id": previous_response_id,
        **echo,
    }


def tail_fields(
    status: str,
    output: list[dict[str, Any]],
    usage: dict[str, Any] | None,
    incomplete: str | None = None,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "status": status,
        "error": error,
        "incomplete_details": {"reason": incomplete} if incomplete else None,
        "output": output,
        "usage": usage,
    }


def head_json(
    request_id: str, model: str, echo: dict[str, Any], previous_response_id: str | None, created_at: int
) -> bytes:
    """head_fields as JSON without the closing brace."""
    return _HEAD % (
        orjson.dumps(response_id(request_id)),
        created_at,
        orjson.dumps(model),
        orjson.dumps(previous_response_id),
        (b"," + orjson.dumps(echo)[1:-1]) if echo else b"",
    )


def text_tail_json(r: InferenceResponse, items: bytes) -> bytes:
    """final_fields of a text-only answer whose output items are `items` (JSON, comma-separated),
    with the response object's closing brace."""
    incomplete = INCOMPLETE.get(r.finish_reason)
    inp, out = r.input_tokens, r.output_tokens
    return _TEXT_TAIL % (
        b"incomplete" if incomplete else b"completed",
        b'{"reason":"%s"}' % incomplete.encode() if incomplete else b"null",
        items,
        inp,
        r.cached_prompt_tokens,
        r.cache_creation_tokens,
        out,
        r.reasoning_tokens,
        inp + out,
        orjson.dumps(float(r.cost)),
    )


def render_json(
    r: InferenceResponse,
    echo: dict[str, Any],
    previous_response_id: str | None,
    include_encrypted: bool,
    created_at: int | None = None,
) -> bytes:
    """render() as JSON; a text-only answer straight from the templates."""
    texts = [b.text for b in r.blocks if isinstance(b, TextBlock)]
    if len(texts) != len(r.blocks):
        return orjson.dumps(render(r, echo, previous_response_id, include_encrypted, created_at))
    created = created_at if created_at is not None else int(time.time())
    base = base_of(r.id)
    items = b",".join(
        TEXT_ITEM % (orjson.dumps(item_id("msg", base, i)), orjson.dumps(text))
        for i, text in enumerate(texts)
    )
    return head_json(r.id, r.model, echo, previous_response_id, created) + text_tail_json(r, items)


def render(
    r: InferenceResponse,
    echo: dict[str, Any],
    previous_response_id: str | None,
    include_encrypted: bool,
    created_at: int | None = None,
) -> dict[str, Any]:
    created = created_at if created_at is not None else int(time.time())
    return {
        **head_fields(r.id, r.model, echo, previous_response_id, created),
        **final_fields(r, include_encrypted),
    }


def final_fields(r: InferenceResponse, include_encrypted: bool) -> dict[str, Any]:
    incomplete = INCOMPLETE.get(r.finish_reason)
    status = "incomplete" if incomplete else "completed"
    return tail_fields(status, output_items(r.blocks, r.id, include_encrypted), usage(r), incomplete)
