"""OpenAI's Responses API as an upstream (`api: responses` on a model of an OpenAI-type provider).

For models OpenAI serves only through `POST /v1/responses`, and so reasoning survives a turn:
every call is stateless (`store: false`) and asks for `reasoning.encrypted_content`; reasoning
items come back as thinking blocks whose signature is that content (with the item id), and go
out again only to an OpenAI-type provider (ensemble.reasoning). Hosted tools the client sent
(web_search …) pass through here; every other route refuses them (server/responses.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson

from ensemble.assembly import parse_arguments
from ensemble.errors import InvalidRequest, ProviderError
from ensemble.providers.base import StreamDecoder, Target, WireFormat
from ensemble.providers.openai_parts import HOSTED_TOOLS_KEY as HOSTED_KEY
from ensemble.providers.openai_parts import data_url, foreign
from ensemble.reasoning import handed_back
from ensemble.types import (
    AudioContent,
    ContentBlock,
    DocumentContent,
    EventBlock,
    Finish,
    FinishReason,
    ImageContent,
    InferenceRequest,
    Message,
    ProviderResult,
    StreamDelta,
    TextBlock,
    TextContent,
    TextDelta,
    ThinkingBlock,
    ThinkingContent,
    ThinkingDelta,
    ToolCallArgs,
    ToolCallBlock,
    ToolCallOut,
    ToolCallStart,
    ToolChoiceNamed,
    Usage,
    UsageDelta,
)

# Chat-completions parameters with a place of their own in a Responses body (or none there).
_MAPPED = frozenset(
    {
        HOSTED_KEY,
        "reasoning_effort",
        "verbosity",
        "max_completion_tokens",
        "stream_options",
        "response_format",
    }
)


def _chat_format(value: Any) -> dict[str, Any] | None:
    """A chat-completions `response_format` the client sent as an extra, as a Responses `text.format`
    (the Responses API refuses the chat field)."""
    if not isinstance(value, dict) or value.get("type") not in ("text", "json_object", "json_schema"):
        return None
    if value["type"] != "json_schema":
        return {"type": value["type"]}
    raw = value.get("json_schema")
    spec: dict[str, Any] = raw if isinstance(raw, dict) else {}
    return {
        "type": "json_schema",
        "name": spec.get("name") or "response",
        **{k: spec[k] for k in ("schema", "strict", "description") if k in spec},
    }


def _part(block: ContentBlock, i: int) -> dict[str, Any] | None:
    if isinstance(block, TextContent):
        return {"type": "input_text", "text": block.text}
    if isinstance(block, ImageContent):
        src = block.source
        url = src.url if src.type == "url" else data_url(src.media_type, src.data)
        return {"type": "input_image", "image_url": url, "detail": "auto"}
    if isinstance(block, DocumentContent):
        src = block.source
        if src.type == "url":
            return {"type": "input_file", "file_url": src.url}
        return {
            "type": "input_file",
            "filename": "document",
            "file_data": data_url(src.media_type, src.data),
        }
    if isinstance(block, AudioContent):
        raise InvalidRequest(f"messages[{i}]: the Responses API takes no audio input", param="messages")
    return None  # thinking is handled by the caller; another provider's redacted thinking is dropped


def _reasoning_item(block: ThinkingContent) -> dict[str, Any] | None:
    if not block.signature or not handed_back(block, "openai") or block.origin is None:
        return None  # OpenAI verifies reasoning items: only its own encrypted content goes back
    item: dict[str, Any] = {
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": block.thinking}] if block.thinking else [],
        "encrypted_content": block.signature,
    }
    if block.item_id:
        item["id"] = block.item_id
    return item


def _assistant_items(m: Message) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    text: list[str] = []
    blocks = [TextContent(text=m.content)] if isinstance(m.content, str) and m.content else m.content

    def flush() -> None:
        if text:
            # An earlier assistant turn as an easy input message (text content): an
            # `output_text` part belongs to an output message item, which needs its id and status.
            out.append({"type": "message", "role": "assistant", "content": "".join(text)})
            text.clear()

    for b in blocks if isinstance(blocks, list) else ():
        if isinstance(b, ThinkingContent):
            flush()
            item = _reasoning_item(b)
            if item is not None:
                out.append(item)
        elif isinstance(b, TextContent):
            text.append(b.text)
    flush()
    for c in m.tool_calls or ():
        args = c.arguments if isinstance(c.arguments, str) else orjson.dumps(c.arguments).decode()
        out.append({"type": "function_call", "call_id": c.id, "name": c.name, "arguments": args})
    return out


def input_items(messages: list[Message]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for i, m in enumerate(messages):
        if m.role == "assistant":
            items += _assistant_items(m)
        elif m.role == "tool":
            output = ("Error: " if m.is_error else "") + m.text()
            items.append({"type": "function_call_output", "call_id": m.tool_call_id or "", "output": output})
        else:
            role = "developer" if m.role == "system" else "user"
            if isinstance(m.content, str):
                content: Any = m.content
            else:
                content = [p for p in (_part(b, i) for b in m.content) if p is not None]
            items.append({"type": "message", "role": role, "content": content})
    return items


def request_body(
    request: InferenceRequest, model_id: str, stream: bool, skip: frozenset[str]
) -> dict[str, Any]:
    if request.stop_sequences:
        raise InvalidRequest("stop: the OpenAI Responses API has no stop sequences", param="stop")
    extras = request.provider_config or {}
    body: dict[str, Any] = {
        "model": model_id,
        "input": input_items(request.messages),
        "store": False,
        "include": ["reasoning.encrypted_content"],
    }
    if request.max_tokens is not None:
        body["max_output_tokens"] = request.max_tokens
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.top_p is not None:
        body["top_p"] = request.top_p
    tools: list[dict[str, Any]] = []
    for t in request.tools or ():
        tool: dict[str, Any] = {"type": "function", "name": t.name, "parameters": t.parameters}
        if t.description:
            tool["description"] = t.description
        # Responses function tools are strict unless told otherwise (Chat Completions' are not):
        # say it, so a schema written for non-strict mode is not refused.
        tool["strict"] = bool(t.strict)
        tools.append(tool)
    tools += extras.get(HOSTED_KEY) or []
    if tools:
        body["tools"] = tools
    choice = request.tool_choice
    if choice is not None:
        body["tool_choice"] = (
            {"type": "function", "name": choice.name} if isinstance(choice, ToolChoiceNamed) else choice
        )
    effort = extras.get("reasoning_effort")
    if effort:
        body["reasoning"] = {"effort": effort, "summary": "auto"}
    text: dict[str, Any] = {}
    fmt = request.response_format
    if fmt is not None:
        wire: dict[str, Any] = {"type": fmt.type}
        if fmt.type == "json_schema":
            wire.update(name=fmt.name or "response", schema=fmt.schema or {})
            if fmt.strict is not None:
                wire["strict"] = fmt.strict
            if fmt.description:
                wire["description"] = fmt.description
        text["format"] = wire
    elif (chat_format := _chat_format(extras.get("response_format"))) is not None:
        text["format"] = chat_format
    if extras.get("verbosity"):
        text["verbosity"] = extras["verbosity"]
    if text:
        body["text"] = text
    if request.session_id:
        body["prompt_cache_key"] = request.session_id
    if stream:
        body["stream"] = True
    for key, value in extras.items():
        if key not in _MAPPED and not foreign(key, skip):
            body.setdefault(key, value)
    return body


def usage_from_wire(u: dict[str, Any]) -> Usage:
    return Usage(
        input_tokens=int(u.get("input_tokens") or 0),
        output_tokens=int(u.get("output_tokens") or 0),
        cached_tokens=int((u.get("input_tokens_details") or {}).get("cached_tokens") or 0),
        cache_creation_tokens=int((u.get("input_tokens_details") or {}).get("cache_write_tokens") or 0),
        reasoning_tokens=int((u.get("output_tokens_details") or {}).get("reasoning_tokens") or 0),
    )


def finish_reason(response: dict[str, Any], has_call: bool) -> FinishReason:
    if response.get("status") == "incomplete":
        reason = (response.get("incomplete_details") or {}).get("reason")
        return "content_filter" if reason == "content_filter" else "length"
    return "tool_use" if has_call else "stop"


def _failure(response: dict[str, Any]) -> ProviderError:
    err = response.get("error") or {}
    return ProviderError(
        f"provider response failed: {err.get('message', 'unknown error')}",
        code="upstream_stream_error",
        retryable=True,
    )


def _summary(item: dict[str, Any]) -> str:
    return "\n\n".join(s.get("text", "") for s in item.get("summary") or () if isinstance(s, dict))


def blocks_from_output(output: list[dict[str, Any]]) -> list[EventBlock]:
    blocks: list[EventBlock] = []
    for item in output:
        kind = item.get("type")
        if kind == "reasoning":
            blocks.append(
                ThinkingBlock(
                    thinking=_summary(item), signature=item.get("encrypted_content"), item_id=item.get("id")
                )
            )
        elif kind == "message":
            text = "".join(
                p.get("text", "") for p in item.get("content") or () if p.get("type") == "output_text"
            )
            if text:
                blocks.append(TextBlock(text=text))
        elif kind == "function_call":
            raw = item.get("arguments") or ""
            out = ToolCallOut(
                id=item.get("call_id") or "",
                name=item.get("name") or "",
                arguments=parse_arguments(raw),
                raw_arguments=raw,
            )
            blocks.append(ToolCallBlock(tool_call=out))
    return blocks


class ResponsesDecoder(StreamDecoder):
    """Responses stream events → deltas: each output item is one block, indexed in output order."""

    def __init__(self) -> None:
        self._index: dict[str, int] = {}  # item id → block index
        self._args_seen: set[str] = set()
        self._summary_parts: dict[str, int] = {}
        self._has_call = False

    def _block(self, item_id: str) -> int:
        index = self._index.get(item_id)
        if index is None:
            index = self._index[item_id] = len(self._index)
        return index

    def decode(self, event: str, data: str) -> list[StreamDelta]:
        ev = orjson.loads(data)
        kind = ev.get("type") or event
        if kind == "response.output_text.delta":
            return [TextDelta(index=self._block(ev["item_id"]), text=ev.get("delta") or "")]
        if kind == "response.function_call_arguments.delta":
            self._args_seen.add(ev["item_id"])
            return [ToolCallArgs(index=self._block(ev["item_id"]), fragment=ev.get("delta") or "")]
        if kind == "response.reasoning_summary_text.delta":
            item_id = ev["item_id"]
            part = int(ev.get("summary_index") or 0)
            sep = "\n\n" if self._summary_parts.get(item_id, part) != part else ""
            self._summary_parts[item_id] = part
            return [ThinkingDelta(index=self._block(item_id), thinking=sep + (ev.get("delta") or ""))]
        if kind == "response.output_item.added":
            item = ev.get("item") or {}
            item_type, item_id = item.get("type"), item.get("id") or f"item{ev.get('output_index')}"
            if item_type == "reasoning":
                return [ThinkingDelta(index=self._block(item_id), item_id=item_id)]
            if item_type == "function_call":
                self._has_call = True
                return [
                    ToolCallStart(
                        index=self._block(item_id), id=item.get("call_id") or "", name=item.get("name") or ""
                    )
                ]
            return []
        if kind == "response.output_item.done":
            item = ev.get("item") or {}
            item_id = item.get("id") or ""
            if item.get("type") == "reasoning" and item.get("encrypted_content"):
                return [ThinkingDelta(index=self._block(item_id), signature=item["encrypted_content"])]
            if (
                item.get("type") == "function_call"
                and item_id not in self._args_seen
                and item.get("arguments")
            ):
                return [ToolCallArgs(index=self._block(item_id), fragment=item["arguments"])]
            return []
        if kind in ("response.completed", "response.incomplete"):
            response = ev.get("response") or {}
            u = usage_from_wire(response.get("usage") or {})
            usage = UsageDelta(
                input_tokens=u.input_tokens,
                output_tokens=u.output_tokens,
                cached_tokens=u.cached_tokens,
                reasoning_tokens=u.reasoning_tokens,
            )
            return [
                usage,
                Finish(reason=finish_reason(response, self._has_call), model=response.get("model")),
            ]
        if kind == "response.failed":
            raise _failure(ev.get("response") or {})
        if kind == "error":
            raise ProviderError(
                f"provider stream error: {ev.get('message', 'unknown error')}",
                code="upstream_stream_error",
                retryable=True,
            )
        return []


class ResponsesWire(WireFormat):
    """The wire format of OpenAI-type models configured with `api: responses`. `skip` and `headers`
    are the provider's dialect settings; errors read as the chat-completions wire reads them."""

    def __init__(
        self,
        skip: frozenset[str],
        headers: Mapping[str, str],
        classify: Callable[[int, Mapping[str, str], bytes], ProviderError],
    ) -> None:
        self.path = "/v1/responses"
        self.skip = skip
        self.extra_headers = dict(headers)
        self._classify = classify

    def classify(self, status: int, headers: Mapping[str, str], body: bytes) -> ProviderError:
        return self._classify(status, headers, body)

    def for_target(self, target: Target) -> ResponsesWire:
        return self

    def build(
        self, request: InferenceRequest, target: Target, stream: bool
    ) -> tuple[str, dict[str, str], bytes]:
        body = request_body(request, target.model.upstream_id, stream, self.skip)
        key = target.endpoint.api_key
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        headers["Content-Type"] = "application/json"
        headers["Accept"] = "text/event-stream" if stream else "application/json"
        headers.update(self.extra_headers)
        return f"{target.endpoint.base_url}{self.path}", headers, orjson.dumps(body)

    def parse(self, body: bytes) -> ProviderResult:
        data = orjson.loads(body)
        if data.get("status") == "failed":
            raise _failure(data)
        blocks = blocks_from_output(data.get("output") or [])
        has_call = any(isinstance(b, ToolCallBlock) for b in blocks)
        return ProviderResult(
            blocks=blocks,
            usage=usage_from_wire(data.get("usage") or {}),
            finish_reason=finish_reason(data, has_call),
            upstream_model=data.get("model"),
        )

    def decoder(self) -> StreamDecoder:
        return ResponsesDecoder()
