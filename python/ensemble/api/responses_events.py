"""The OpenAI Responses event stream: canonical deltas as `response.created` … `response.completed`
events, each with a rising `sequence_number` (see docs/responses.md). The objects the events carry are
built by responses_render.py, so the stream, the JSON answer and a later `GET` agree.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from ensemble._native import responses_deltas
from ensemble.api.responses_render import (
    INCOMPLETE,
    TEXT_ITEM,
    base_of,
    call_item,
    final_fields,
    head_json,
    message_item,
    reasoning_item,
    tail_fields,
    text_tail_json,
)
from ensemble.api.responses_render import (
    item_id as make_item_id,
)
from ensemble.errors import EnsembleError
from ensemble.types import (
    InferenceResponse,
    StreamDelta,
    TextDelta,
    TextRun,
    ThinkingBlock,
    ThinkingDelta,
    ToolCallArgs,
    ToolCallStart,
)


class _Open:
    """An output item being streamed."""

    __slots__ = (
        "call_id",
        "delta_format",
        "delta_prefix",
        "item_id",
        "kind",
        "name",
        "output_index",
        "parts",
        "signature",
    )

    def __init__(self, kind: str, item_id: str, output_index: int) -> None:
        self.kind = kind
        self.item_id = item_id
        self.output_index = output_index
        self.parts: list[str] = []
        self.signature = ""
        self.call_id = ""
        self.name = ""
        self.delta_format = b""
        self.delta_prefix = b""  # a text delta event up to its sequence number (TextRuns, natively)


# The events of a text item, written around its id, output index and text as JSON (the common
# case, so one bytes-format call each instead of building and serialising dicts).
_TEXT_OPENED = (
    b'event: response.output_item.added\ndata: {"type":"response.output_item.added","sequence_number":%d,'
    b'"output_index":%s,"item":{"id":%s,"type":"message","role":"assistant","status":"in_progress",'
    b'"content":[]}}\n\n'
    b'event: response.content_part.added\ndata: {"type":"response.content_part.added","sequence_number":%d,'
    b'"item_id":%s,"output_index":%s,"content_index":0,"part":{"type":"output_text","text":"",'
    b'"annotations":[],"logprobs":[]}}\n\n'
)
_TEXT_DONE = (
    b'event: response.output_text.done\ndata: {"type":"response.output_text.done","sequence_number":%d,'
    b'"item_id":%s,"output_index":%s,"content_index":0,"text":%s,"logprobs":[]}\n\n'
    b'event: response.content_part.done\ndata: {"type":"response.content_part.done","sequence_number":%d,'
    b'"item_id":%s,"output_index":%s,"content_index":0,"part":{"type":"output_text","text":%s,'
    b'"annotations":[],"logprobs":[]}}\n\n'
    b'event: response.output_item.done\ndata: {"type":"response.output_item.done","sequence_number":%d,'
    b'"output_index":%s,"item":%s}\n\n'
)
# A text delta's event `% (item id JSON, output index)`, up to its sequence number, and after its delta.
_TEXT_DELTA_HEAD = (
    b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","item_id":%s,'
    b'"output_index":%s,"content_index":0,"sequence_number":'
)
_TEXT_DELTA_TAIL = b',"logprobs":[]}\n\n'
# With the item's id and output index in place: `% (sequence number, delta JSON)`.
_TEXT_DELTA = _TEXT_DELTA_HEAD + b'%%d,"delta":%%s' + _TEXT_DELTA_TAIL

_ID_PREFIX = {"text": "msg", "thinking": "rs", "tool": "fc"}

_DELTA_EVENT = {
    "thinking": b"response.reasoning_summary_text.delta",
    "tool": b"response.function_call_arguments.delta",
}


_IN_PROGRESS = b',"status":"in_progress","error":null,"incomplete_details":null,"output":[],"usage":null}'


class EventWriter:
    """Renders deltas as Responses stream events. Each canonical block becomes one output item,
    opened at its first delta and closed (its `.done` events) when the next block starts or the
    answer ends; per token one small event is written, built around the delta's JSON string. The
    text of a read's upstream events comes as one TextRun where the provider can, and its events
    are written natively (rust/src/responses_sse.rs), the same bytes as one by one."""

    content_type = "text/event-stream; charset=utf-8"
    # Always rendered: the gateway keeps its own response object (ids, sequence numbers, storage).
    passthrough: str | None = None
    event_runs = True

    def __init__(
        self,
        request_id: str,
        model: str,
        echo: dict[str, Any],
        previous_response_id: str | None,
        include_encrypted: bool,
    ) -> None:
        self._request_id = request_id
        self._base = base_of(request_id)
        self._model = model
        self._echo = echo
        self._previous = previous_response_id
        self._include_encrypted = include_encrypted
        self._created_at = int(time.time())
        self._seq = 0
        self._items: dict[int, _Open] = {}  # canonical block index → item
        self._current: _Open | None = None
        self._text_index = -1  # block index of the open item when it is text (the per-token path)
        # Finished output items, in output order: dicts, or ("text", id, text) built only if needed.
        self._done: list[Any] = []
        self._head_json = b""  # the response object's unchanging fields, JSON without the closing brace
        self._done_json: list[bytes] = []  # finished text items as JSON, while the answer is only text
        self._only_text = True

    def _event(self, kind: str, payload: dict[str, Any]) -> bytes:
        seq = self._seq
        self._seq += 1
        body = {"type": kind, "sequence_number": seq, **payload}
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(body) + b"\n\n"

    def _response_event(self, kind: str, tail: dict[str, Any]) -> bytes:
        """An event carrying the whole response object, its head serialised once per stream."""
        if not self._head_json:
            self._head_json = self._head()
        seq = self._seq
        self._seq = seq + 1
        name = kind.encode()
        return (
            b"event: "
            + name
            + b'\ndata: {"type":"'
            + name
            + b'","sequence_number":'
            + str(seq).encode()
            + b',"response":'
            + self._head_json
            + b","
            + orjson.dumps(tail)[1:]
            + b"}\n\n"
        )

    def _head(self) -> bytes:
        return head_json(self._request_id, self._model, self._echo, self._previous, self._created_at)

    def start(self) -> bytes:
        self._head_json = self._head()
        response = self._head_json + _IN_PROGRESS
        self._seq = 2
        return (
            b'event: response.created\ndata: {"type":"response.created","sequence_number":0,"response":'
            + response
            + b'}\n\nevent: response.in_progress\ndata: {"type":"response.in_progress","sequence_number":1,'
            b'"response":' + response + b"}\n\n"
        )

    # -- items ------------------------------------------------------------------------------------

    def _open(self, index: int, kind: str, delta: StreamDelta) -> bytes:
        out = self._close() if self._current is not None else b""
        output_index = len(self._done)
        item_id = make_item_id(_ID_PREFIX[kind], self._base, index)
        if isinstance(delta, ThinkingDelta) and delta.item_id:
            item_id = delta.item_id
        item = self._items[index] = self._current = _Open(kind, item_id, output_index)
        self._text_index = index if kind == "text" else -1
        if kind == "text":
            # Our own ids: letters, digits and "_", so the template needs no escaping.
            ident, oi, seq = orjson.dumps(item_id), str(output_index).encode(), self._seq
            self._seq = seq + 2
            item.delta_format = _TEXT_DELTA % (ident, oi)
            item.delta_prefix = _TEXT_DELTA_HEAD % (ident, oi)
            return out + _TEXT_OPENED % (seq, oi, ident, seq + 1, ident, oi)
        where = {"item_id": item_id, "output_index": output_index}
        if kind == "thinking":
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
                {
                    "output_index": output_index,
                    "item": call_item(item_id, delta.id, delta.name, "", "in_progress"),
                },
            )
            extra = b""
        name = _DELTA_EVENT[kind]
        head = (
            b"event: "
            + name
            + b'\ndata: {"type":"'
            + name
            + b'","item_id":'
            + orjson.dumps(item_id)
            + b',"output_index":'
            + str(output_index).encode()
            + extra
        ).replace(b"%", b"%%")
        # One bytes-format call per token: the sequence number and the delta's JSON string.
        item.delta_format = head + b',"sequence_number":%d,"delta":%s}\n\n'
        return out

    def _delta(self, item: _Open, text: str) -> bytes:
        item.parts.append(text)
        seq = self._seq
        self._seq = seq + 1
        return item.delta_format % (seq, orjson.dumps(text))

    def _close(self) -> bytes:
        item = self._current
        if item is None:
            return b""
        self._current = None
        self._text_index = -1
        text = "".join(item.parts)
        if item.kind == "text":
            ident, oi, t, seq = (
                orjson.dumps(item.item_id),
                str(item.output_index).encode(),
                orjson.dumps(text),
                self._seq,
            )
            self._seq = seq + 3
            self._done.append(("text", item.item_id, text))
            done_json = TEXT_ITEM % (ident, t)
            self._done_json.append(done_json)
            return _TEXT_DONE % (seq, ident, oi, t, seq + 1, ident, oi, t, seq + 2, oi, done_json)
        self._done_json.clear()  # not only text: the final object is built from the whole answer
        self._only_text = False
        where = {"item_id": item.item_id, "output_index": item.output_index}
        out = b""
        if item.kind == "thinking":
            out += self._event(
                "response.reasoning_summary_text.done", {**where, "summary_index": 0, "text": text}
            )
            part = {"type": "summary_text", "text": text}
            out += self._event(
                "response.reasoning_summary_part.done", {**where, "summary_index": 0, "part": part}
            )
            block = ThinkingBlock(thinking=text, signature=item.signature or None)
            done = reasoning_item(item.item_id, block, False)  # the signature is added at the end
        else:
            arguments = text or "{}"
            out += self._event(
                "response.function_call_arguments.done", {**where, "name": item.name, "arguments": arguments}
            )
            done = call_item(item.item_id, item.call_id, item.name, arguments)
        self._done.append(done)
        return out + self._event(
            "response.output_item.done", {"output_index": item.output_index, "item": done}
        )

    def render(self, delta: StreamDelta) -> bytes | None:
        if type(delta) is TextDelta and delta.index == self._text_index and delta.text:
            # Per token, into the open text item: one format call.
            item = self._current
            if item is not None:
                item.parts.append(delta.text)
                seq = self._seq
                self._seq = seq + 1
                return item.delta_format % (seq, orjson.dumps(delta.text))
        if type(delta) is TextRun:
            return self._run(delta)
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

    def _run(self, run: TextRun) -> bytes | None:
        """A TextRun: its fragments' events, as render() writes them one TextDelta each."""
        item = self._current
        if item is None or run.index != self._text_index:  # not the open text item: not per token
            frames = [self.render(TextDelta(index=run.index, text=f)) for f in run.fragments()]
            return b"".join(f for f in frames if f) or None
        item.parts.append(run.text)
        out, self._seq = responses_deltas(item.delta_prefix, _TEXT_DELTA_TAIL, self._seq, run.text, run.ends)
        return out or None

    def finish(self, response: InferenceResponse) -> bytes:
        out = self._close()
        if self._only_text and len(self._done_json) == len(response.blocks):
            return out + self._text_completed(response)
        final = final_fields(response, self._include_encrypted)
        kind = "response.incomplete" if final["status"] == "incomplete" else "response.completed"
        return out + self._response_event(kind, final)

    def _text_completed(self, response: InferenceResponse) -> bytes:
        """The final event of a text-only answer, from the items already written (render's JSON)."""
        kind = b"response.incomplete" if INCOMPLETE.get(response.finish_reason) else b"response.completed"
        seq = self._seq
        self._seq = seq + 1
        output = self._done_json[0] if len(self._done_json) == 1 else b",".join(self._done_json)
        return b'event: %s\ndata: {"type":"%s","sequence_number":%d,"response":%s%s}\n\n' % (
            kind,
            kind,
            seq,
            self._head_json,
            text_tail_json(response, output),
        )

    def error(self, error: EnsembleError, request_id: str) -> bytes:
        """A mid-stream failure as the API reports one: an `error` event (flat: code, message, param,
        the SDK's ResponseErrorEvent), then the terminal `response.failed` with the output so far."""
        out = self._close()
        code = "server_error" if error.status >= 500 else error.code
        out += self._event("error", {"code": code, "message": error.message, "param": error.param})
        done = [message_item(d[1], d[2]) if isinstance(d, tuple) else d for d in self._done]
        failed = tail_fields("failed", done, None, error={"code": code, "message": error.message})
        return out + self._response_event("response.failed", failed)
