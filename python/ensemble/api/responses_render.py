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

from ensemble.api.responses import encode_encrypted
from ensemble.types import (
    EventBlock,
    InferenceResponse,
    TextBlock,
    ThinkingBlock,
    ToolCallBlock,
)

INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


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
