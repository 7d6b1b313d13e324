"""OpenAI Responses as an egress format: canonical answers as `response` objects, deltas as the
Responses event stream (`response.created` … `response.completed`, rising `sequence_number`).

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
from ensemble.errors import EnsembleError
from ensemble.types import (
    EventBlock,
    InferenceResponse,
    StreamDelta,
    TextBlock,
    TextDelta,
    ThinkingBlock,
    ThinkingDelta,
    ToolCallArgs,
    ToolCallBlock,
    ToolCallStart,
)

_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def response_id(request_id: str) -> str:
    return "resp_" + request_id.removeprefix("req_")


def request_ids(resp_id: str) -> tuple[str, ...]:
    """The request ids a response id may stand for (generated ids carry `req_`, supplied ones not)."""
    rest = resp_id.removeprefix("resp_")
    return ("req_" + rest, rest) if resp_id.startswith("resp_") else (resp_id,)


def _item_id(kind: str, base: str, index: int) -> str:
    return f"{kind}_{base}{index:02d}"


def _base(request_id: str) -> str:
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


def _reasoning_item(item_id: str, block: ThinkingBlock, include_encrypted: bool) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": item_id,
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": block.thinking}] if block.thinking else [],
    }
    if include_encrypted and block.signature:
        item["encrypted_content"] = encode_encrypted(block.origin, block.signature)
    return item


def _message_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
    }


def _call_item(item_id: str, call_id: str, name: str, arguments: str, status: str = "completed") -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def output_items(blocks: list[EventBlock], request_id: str, include_encrypted: bool) -> list[dict[str, Any]]:
    base = _base(request_id)
    out: list[dict[str, Any]] = []
    for i, block in enumerate(blocks):
        if isinstance(block, TextBlock):
            out.append(_message_item(_item_id("msg", base, i), block.text))
        elif isinstance(block, ThinkingBlock):
            out.append(_reasoning_item(block.item_id or _item_id("rs", base, i), block, include_encrypted))
        elif isinstance(block, ToolCallBlock):
            call = block.tool_call
            out.append(_call_item(_item_id("fc", base, i), call.id, call.name, call.raw_arguments or "{}"))
    return out


def response_object(
    *,
    request_id: str,
    model: str,
    echo: dict[str, Any],
    previous_response_id: str | None,
    created_at: int,
    status: str,
    output: list[dict[str, Any]],
    usage: dict[str, Any] | None,
    incomplete: str | None = None,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "id": response_id(request_id),
        "object": "response",
        "created_at": created_at,
        "status": status,
        "background": False,
        "error": error,
        "incomplete_details": {"reason": incomplete} if incomplete else None,
        "model": model,
        "output": output,
        "previous_response_id": previous_response_id,
        **echo,
        "usage": usage,
    }


def render(
    r: InferenceResponse,
    echo: dict[str, Any],
    previous_response_id: str | None,
    include_encrypted: bool,
    created_at: int | None = None,
) -> dict[str, Any]:
    incomplete = _INCOMPLETE.get(r.finish_reason)
    return response_object(
        request_id=r.id,
        model=r.model,
        echo=echo,
        previous_response_id=previous_response_id,
        created_at=created_at if created_at is not None else int(time.time()),
        status="incomplete" if incomplete else "completed",
        output=output_items(r.blocks, r.id, include_encrypted),
        usage=usage(r),
        incomplete=incomplete,
    )


class _Open:
    """An output item being streamed."""

    __slots__ = ("call_id", "delta_head", "item_id", "kind", "name", "output_index", "parts", "signature")

    def __init__(self, kind: str, item_id: str, output_index: int) -> None:
        self.kind = kind
        self.item_id = item_id
        self.output_index = output_index
        self.parts: list[str] = []
        self.signature = ""
        self.call_id = ""
        self.name = ""
        self.delta_head = b""


_DELTA_EVENT = {
    "text": b"response.output_text.delta",
    "thinking": b"response.reasoning_summary_text.delta",
    "tool": b"response.function_call_arguments.delta",
}


class EventWriter:
    """Renders deltas as Responses stream events. Each canonical block becomes one output item,
    opened at its first delta and closed (its `.done` events) when the next block starts or the
    answer ends; per token one small event is written, built around the delta's JSON string."""

    content_type = "text/event-stream; charset=utf-8"

    def __init__(
        self,
        request_id: str,
        model: str,
        echo: dict[str, Any],
        previous_response_id: str | None,
        include_encrypted: bool,
    ) -> None:
        self._request_id = request_id
        self._base = _base(request_id)
        self._model = model
        self._echo = echo
        self._previous = previous_response_id
        self._include_encrypted = include_encrypted
        self._created_at = int(time.time())
        self._seq = 0
        self._items: dict[int, _Open] = {}  # canonical block index → item
        self._current: _Open | None = None
        self._done: list[dict[str, Any]] = []  # finished output items, in output order

    def _event(self, kind: str, payload: dict[str, Any]) -> bytes:
        seq = self._seq
        self._seq += 1
        body = {"type": kind, "sequence_number": seq, **payload}
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(body) + b"\n\n"

    def _skeleton(self, status: str) -> dict[str, Any]:
        return response_object(
            request_id=self._request_id,
            model=self._model,
            echo=self._echo,
            previous_response_id=self._previous,
            created_at=self._created_at,
            status=status,
            output=[],
            usage=None,
        )

    def start(self) -> bytes:
        skeleton = self._skeleton("in_progress")
        return self._event("response.created", {"response": skeleton}) + self._event(
            "response.in_progress", {"response": skeleton}
        )

    # -- items ------------------------------------------------------------------------------------

    def _open(self, index: int, kind: str, delta: StreamDelta) -> bytes:
        out = self._close()
        output_index = len(self._done)
        prefix = {"text": "msg", "thinking": "rs", "tool": "fc"}[kind]
        item_id = _item_id(prefix, self._base, index)
        if isinstance(delta, ThinkingDelta) and delta.item_id:
            item_id = delta.item_id
        item = self._items[index] = self._current = _Open(kind, item_id, output_index)
        where = {"item_id": item_id, "output_index": output_index}
        if kind == "text":
            out += self._event(
                "response.output_item.added",
                {"output_index": output_index, "item": {**_message_item(item_id, "", "in_progress"), "content": []}},
            )
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            out += self._event("response.content_part.added", {**where, "content_index": 0, "part": part})
            extra = b',"content_index":0'
        elif kind == "thinking":
            out += self._event(
                "response.output_item.added",
                {"output_index": output_index, "item": {"id": item_id, "type": "reasoning", "summary": []}},
            )
            part = {"type": "summary_text", "text": ""}
            out += self._event(
                "response.reasoning_summary_part.added", {**where, "summary_index": 0, "part": part}
            )
            extra = b',"summary_index":0'
        else:
            assert isinstance(delta, ToolCallStart)
            item.call_id, item.name = delta.id, delta.name
            out += self._event(
                "response.output_item.added",
                {"output_index": output_index, "item": _call_item(item_id, delta.id, delta.name, "", "in_progress")},
            )
            extra = b""
        name = _DELTA_EVENT[kind]
        item.delta_head = (
            b"event: " + name + b'\ndata: {"type":"' + name + b'","item_id":"' + item_id.encode()
            + b'","output_index":' + str(output_index).encode() + extra
        )
        return out

    def _delta(self, item: _Open, text: str) -> bytes:
        item.parts.append(text)
        seq = self._seq
        self._seq += 1
        tail = b',"logprobs":[]}\n\n' if item.kind == "text" else b"}\n\n"
        return (
            item.delta_head + b',"sequence_number":' + str(seq).encode() + b',"delta":' + orjson.dumps(text) + tail
        )

    def _close(self) -> bytes:
        item = self._current
        if item is None:
            return b""
        self._current = None
        text = "".join(item.parts)
        where = {"item_id": item.item_id, "output_index": item.output_index}
        out = b""
        if item.kind == "text":
            part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
            out += self._event("response.output_text.done", {**where, "content_index": 0, "text": text, "logprobs": []})
            out += self._event("response.content_part.done", {**where, "content_index": 0, "part": part})
            done = _message_item(item.item_id, text)
        elif item.kind == "thinking":
            out += self._event("response.reasoning_summary_text.done", {**where, "summary_index": 0, "text": text})
            part = {"type": "summary_text", "text": text}
            out += self._event("response.reasoning_summary_part.done", {**where, "summary_index": 0, "part": part})
            block = ThinkingBlock(thinking=text, signature=item.signature or None)
            done = _reasoning_item(item.item_id, block, False)  # the signature is added at the end
        else:
            arguments = text or "{}"
            out += self._event(
                "response.function_call_arguments.done", {**where, "name": item.name, "arguments": arguments}
            )
            done = _call_item(item.item_id, item.call_id, item.name, arguments)
        self._done.append(done)
        return out + self._event("response.output_item.done", {"output_index": item.output_index, "item": done})

    def render(self, delta: StreamDelta) -> bytes | None:
        if isinstance(delta, TextDelta):
            item = self._items.get(delta.index)
            head = self._open(delta.index, "text", delta) if item is None else b""
            if not delta.text:
                return head or None
            return head + self._delta(self._items[delta.index], delta.text)
        if isinstance(delta, ThinkingDelta):
            item = self._items.get(delta.index)
            head = self._open(delta.index, "thinking", delta) if item is None else b""
            item = self._items[delta.index]
            item.signature += delta.signature
            return head + (self._delta(item, delta.thinking) if delta.thinking else b"") or None
        if isinstance(delta, ToolCallStart):
            return self._open(delta.index, "tool", delta)
        if isinstance(delta, ToolCallArgs):
            item = self._items.get(delta.index)
            if item is None:
                return None
            return self._delta(item, delta.fragment)
        return None

    def finish(self, response: InferenceResponse) -> bytes:
        out = self._close()
        final = render(response, self._echo, self._previous, self._include_encrypted, self._created_at)
        kind = "response.incomplete" if final["status"] == "incomplete" else "response.completed"
        return out + self._event(kind, {"response": final})

    def error(self, error: EnsembleError, request_id: str) -> bytes:
        out = self._close()
        failed = self._skeleton("failed")
        failed["output"] = self._done
        failed["error"] = {"code": "server_error" if error.status >= 500 else error.code, "message": error.message}
        return out + self._event("response.failed", {"response": failed})
