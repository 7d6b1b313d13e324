"""OpenAI Chat Completions wire format (`type: openai`): `POST /v1/chat/completions`, JSON and SSE.

Many APIs speak it with small differences (xai.py, openrouter.py, openai_compatible.py): those are
an `OpenAIDialect` each, never a branch on the provider type here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import msgspec
import orjson

from ensemble.assembly import parse_arguments
from ensemble.error_types import from_provider
from ensemble.errors import InvalidRequest, ProviderError
from ensemble.providers import embedding_wire
from ensemble.providers.anthropic import refuse_anthropic_tools
from ensemble.providers.base import RUN_ARGS, RUN_TEXT, RUN_THINKING, StreamDecoder, Target, WireFormat
from ensemble.providers.openai_parts import HOSTED_TOOLS_KEY, data_url, foreign
from ensemble.providers.openai_responses import ResponsesWire
from ensemble.providers.registry import ProviderKind, register
from ensemble.providers.upstream_errors import error_object, upstream_error
from ensemble.structured_output import JSON_OBJECT_INSTRUCTION, to_openai
from ensemble.types import (
    AudioContent,
    DocumentContent,
    EmbeddingRequest,
    EmbeddingResult,
    EventBlock,
    Finish,
    FinishReason,
    ImageContent,
    InferenceRequest,
    Message,
    ProviderResult,
    RedactedThinkingBlock,
    RedactedThinkingContent,
    RedactedThinkingDelta,
    ServerToolContent,
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

FINISH_REASONS: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "content_filter",
    "error": "error",
}


# provider_config keys that belong to other providers' APIs (they arrive from Anthropic- or
# Gemini-format clients); an OpenAI-compatible API would refuse them, so they are not forwarded.
# Gemini's keys are camelCase, which no OpenAI parameter is, so `_foreign` catches all of them.
FOREIGN_KEYS = frozenset(
    {
        "thinking",
        "anthropic_beta",
        "anthropic_tools",
        "container",
        "mcp_servers",
        "context_management",
        "cache_control",
        "output_config",
        "inference_geo",
        "speed",
        "diagnostics",
        "user_profile_id",
        "workspace_id",
        "labels",
        HOSTED_TOOLS_KEY,  # the Responses ingress's hosted tools: only its upstream mode runs them
    }
)


def _content_part(block: Any, i: int = 0) -> dict[str, Any]:
    if isinstance(block, TextContent):
        return {"type": "text", "text": block.text}
    if isinstance(block, ImageContent):
        src = block.source
        url = src.url if src.type == "url" else data_url(src.media_type, src.data)
        return {"type": "image_url", "image_url": {"url": url}}
    if isinstance(block, DocumentContent):
        src = block.source
        if src.type == "url":
            raise InvalidRequest(
                f"messages[{i}]: OpenAI-type providers take documents only as base64 data, not URLs",
                param="messages",
            )
        return {
            "type": "file",
            "file": {"filename": "document", "file_data": data_url(src.media_type, src.data)},
        }
    if isinstance(block, AudioContent):
        src = block.source
        if src.type == "url":
            raise InvalidRequest(
                f"messages[{i}]: OpenAI-type providers take audio only as base64 data", param="messages"
            )
        fmt = (src.media_type or "audio/wav").split("/")[-1].replace("mpeg", "mp3")
        return {"type": "input_audio", "input_audio": {"data": src.data or "", "format": fmt}}
    raise InvalidRequest(f"messages[{i}]: unsupported content block {type(block).__name__}", param="messages")


def reasoning_details_to_wire(m: Message) -> list[dict[str, Any]]:
    """An earlier turn's thinking as OpenRouter `reasoning_details`, so signed or encrypted
    reasoning goes back to the model that made it."""
    if isinstance(m.content, str):
        return []
    out: list[dict[str, Any]] = []
    for b in m.content:
        if isinstance(b, ThinkingContent):
            detail: dict[str, Any] = {"type": "reasoning.text", "text": b.thinking, "index": len(out)}
            if b.signature:
                detail["signature"] = b.signature
            out.append(detail)
        elif isinstance(b, RedactedThinkingContent):
            out.append({"type": "reasoning.encrypted", "data": b.data, "index": len(out)})
    return out


def message_to_wire(m: Message, i: int = 0, reasoning_details: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"role": m.role}
    if m.role == "tool":
        out["tool_call_id"] = m.tool_call_id or ""
        # No error flag in this format: say it in the text so the model does not miss it.
        out["content"] = ("Error: " if m.is_error else "") + m.text()
        return out
    if isinstance(m.content, str):
        out["content"] = m.content
    else:
        # Thinking from another provider's earlier turn means nothing to an OpenAI-type model.
        parts = [
            _content_part(b, i)
            for b in m.content
            if not isinstance(b, ThinkingContent | RedactedThinkingContent | ServerToolContent)
        ]
        if m.role in ("system", "assistant") and all(p["type"] == "text" for p in parts):
            out["content"] = "".join(p["text"] for p in parts)
        else:
            out["content"] = parts
    if m.role == "assistant" and m.tool_calls:
        out["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                "function": {
                    "name": c.name,
                    "arguments": c.arguments
                    if isinstance(c.arguments, str)
                    else orjson.dumps(c.arguments).decode(),
                },
            }
            for c in m.tool_calls
        ]
        if not out["content"]:
            out["content"] = None
    if m.name:
        out["name"] = m.name
    if reasoning_details and m.role == "assistant" and (details := reasoning_details_to_wire(m)):
        out["reasoning_details"] = details
    return out


def request_to_wire(
    request: InferenceRequest,
    model_id: str,
    *,
    stream: bool,
    max_tokens_field: str,
    skip: frozenset[str] = FOREIGN_KEYS,
    stream_usage: bool = True,
    reasoning_details: bool = False,
) -> dict[str, Any]:
    refuse_anthropic_tools(request, model_id)
    body: dict[str, Any] = {
        "model": model_id,
        "messages": [message_to_wire(m, i, reasoning_details) for i, m in enumerate(request.messages)],
    }
    if request.max_tokens is not None:
        body[max_tokens_field] = request.max_tokens
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.stop_sequences:
        body["stop"] = request.stop_sequences
    if request.tools:
        tools = []
        for t in request.tools:
            fn: dict[str, Any] = {"name": t.name, "parameters": t.parameters}
            if t.description:
                fn["description"] = t.description
            if t.strict is not None:
                fn["strict"] = t.strict
            tools.append({"type": "function", "function": fn})
        body["tools"] = tools
    if request.tool_choice is not None:
        choice = request.tool_choice
        body["tool_choice"] = (
            {"type": "function", "function": {"name": choice.name}}
            if isinstance(choice, ToolChoiceNamed)
            else choice
        )
    if request.response_format is not None:
        body["response_format"] = to_openai(request.response_format)
        # OpenAI refuses JSON mode unless a message mentions JSON; other formats' clients do not know.
        if request.response_format.type == "json_object" and not any(
            "json" in m.text().lower() for m in request.messages
        ):
            body["messages"].insert(0, {"role": "system", "content": JSON_OBJECT_INSTRUCTION})
    if stream:
        body["stream"] = True
        if stream_usage:
            body["stream_options"] = {"include_usage": True}
    if request.provider_config:
        for key, value in request.provider_config.items():
            if not foreign(key, skip):
                body.setdefault(key, value)
    return body


def usage_from_wire(u: Mapping[str, Any]) -> Usage:
    prompt_details = u.get("prompt_tokens_details") or {}
    completion_details = u.get("completion_tokens_details") or {}
    prompt = int(u.get("prompt_tokens") or 0)
    completion = int(u.get("completion_tokens") or 0)
    reasoning = int(completion_details.get("reasoning_tokens") or 0)
    total = u.get("total_tokens")
    # OpenAI and OpenRouter count reasoning inside completion_tokens; xAI reports it beside them
    # (total = prompt + completion + reasoning). The total tells which one this answer used.
    if reasoning and isinstance(total, int) and total == prompt + completion + reasoning:
        completion += reasoning
    return Usage(
        input_tokens=prompt,
        output_tokens=completion,
        # DeepSeek names its cache reads `prompt_cache_hit_tokens` (counted inside prompt_tokens too).
        cached_tokens=int(prompt_details.get("cached_tokens") or u.get("prompt_cache_hit_tokens") or 0),
        cache_creation_tokens=int(prompt_details.get("cache_write_tokens") or 0),
        reasoning_tokens=reasoning,
    )


def upstream_cost(u: Mapping[str, Any]) -> Decimal | None:
    """OpenRouter's `usage.cost`: what the call really cost in USD (parsed exactly, never via float)."""
    cost = u.get("cost")
    if cost is None or isinstance(cost, bool):
        return None
    try:
        value = Decimal(str(cost))
    except ArithmeticError:
        return None
    return value if value.is_finite() and value >= 0 else None


def reasoning_blocks(details: Any) -> list[EventBlock]:
    """OpenRouter `reasoning_details` of a whole answer as thinking blocks: text and summaries (one
    block, with the signature), encrypted reasoning as redacted thinking."""
    blocks: list[EventBlock] = []
    thinking: ThinkingBlock | None = None
    for d in details if isinstance(details, list) else ():
        if not isinstance(d, dict):
            continue
        if d.get("type") == "reasoning.encrypted" and isinstance(d.get("data"), str):
            blocks.append(RedactedThinkingBlock(data=d["data"]))
            continue
        text = d.get("text") if d.get("type") == "reasoning.text" else d.get("summary")
        if thinking is None:
            thinking = ThinkingBlock(thinking="")
            blocks.append(thinking)
        if isinstance(text, str):
            thinking.thinking += text
        if isinstance(d.get("signature"), str) and d["signature"]:
            thinking.signature = d["signature"]
    return blocks


class OpenAIDecoder(StreamDecoder):
    """chat.completion.chunk events → deltas. Block indexes: thinking, text and each tool call get
    their own, allocated in order of first appearance."""

    def __init__(self, report_cost: bool = False) -> None:
        self._report_cost = report_cost
        self._next = 0
        self._text: int | None = None
        self._thinking: int | None = None
        self._tools: dict[int, int] = {}

    def _alloc(self) -> int:
        i = self._next
        self._next += 1
        return i

    def decode(self, event: str, data: str) -> list[StreamDelta]:
        if data == "[DONE]":
            return []
        # Typed decoding reads only the fields used here (about 3x faster than building dicts);
        # anything unusual (an error object, a field of an unexpected type) takes the generic path.
        if '"error"' not in data:
            try:
                chunk = _CHUNK.decode(data)
            except msgspec.ValidationError:
                pass
            else:
                return self._typed(chunk)
        return self._generic(orjson.loads(data))

    def native_run(self, kind: int, key: int, text: str) -> StreamDelta:
        # The scanner hands runs only for blocks this decoder allocated (it saw their first event).
        if kind == RUN_TEXT and self._text is not None:
            return TextDelta(index=self._text, text=text)
        if kind == RUN_THINKING and self._thinking is not None:
            return ThinkingDelta(index=self._thinking, thinking=text)
        if kind == RUN_ARGS and key in self._tools:
            return ToolCallArgs(index=self._tools[key], fragment=text)
        raise ValueError(f"no open block for scanner run {kind}/{key}")

    def _typed(self, chunk: _WireChunk) -> list[StreamDelta]:
        out: list[StreamDelta] = []
        for choice in chunk.choices or ():
            if choice.index != 0:
                continue
            delta = choice.delta
            if delta is not None:
                reasoning = delta.reasoning_content or delta.reasoning
                if delta.reasoning_details:
                    self._details(out, delta.reasoning_details)
                    reasoning = None
                self._content(out, reasoning, delta.content)
                for call in delta.tool_calls or ():
                    fn = call.function or _NO_FUNCTION
                    self._tool_call(out, call.index, call.id, fn.name, fn.arguments)
            if choice.finish_reason:
                out.append(Finish(reason=FINISH_REASONS.get(choice.finish_reason, "stop"), model=chunk.model))
        if chunk.usage:
            out.append(self._usage(chunk.usage))
        return out

    def _content(self, out: list[StreamDelta], reasoning: Any, content: Any) -> None:
        if reasoning:
            if self._thinking is None:
                self._thinking = self._alloc()
            out.append(ThinkingDelta(index=self._thinking, thinking=reasoning))
        if content:
            if self._text is None:
                self._text = self._alloc()
            out.append(TextDelta(index=self._text, text=content))

    def _details(self, out: list[StreamDelta], details: Any) -> None:
        """OpenRouter `reasoning_details` pieces: text and summaries (with their signature) join
        the thinking block; encrypted reasoning is a redacted block of its own."""
        for d in details if isinstance(details, list) else ():
            if not isinstance(d, dict):
                continue
            if d.get("type") == "reasoning.encrypted" and isinstance(d.get("data"), str):
                out.append(RedactedThinkingDelta(index=self._alloc(), data=d["data"]))
                continue
            text = d.get("text") if d.get("type") == "reasoning.text" else d.get("summary")
            signature = d.get("signature")
            if not text and not signature:
                continue
            if self._thinking is None:
                self._thinking = self._alloc()
            out.append(
                ThinkingDelta(
                    index=self._thinking,
                    thinking=text if isinstance(text, str) else "",
                    signature=signature if isinstance(signature, str) else "",
                )
            )

    def _tool_call(self, out: list[StreamDelta], slot: Any, call_id: Any, name: Any, arguments: Any) -> None:
        if slot not in self._tools:
            self._tools[slot] = self._alloc()
            out.append(ToolCallStart(index=self._tools[slot], id=call_id or "", name=name or ""))
        if arguments:
            out.append(ToolCallArgs(index=self._tools[slot], fragment=arguments))

    def _usage(self, usage: Mapping[str, Any]) -> UsageDelta:
        u = usage_from_wire(usage)
        return UsageDelta(
            input_tokens=u.input_tokens,
            output_tokens=u.output_tokens,
            cached_tokens=u.cached_tokens,
            cache_creation_tokens=u.cache_creation_tokens,
            reasoning_tokens=u.reasoning_tokens,
            cost=upstream_cost(usage) if self._report_cost else None,
        )

    def _generic(self, chunk: Any) -> list[StreamDelta]:
        if "error" in chunk and not chunk.get("choices"):
            err = chunk["error"] or {}
            kind = err.get("type") or err.get("code") if isinstance(err, dict) else None
            raise ProviderError(
                f"provider stream error: {err.get('message', 'unknown error')}",
                code="upstream_stream_error",
                retryable=True,  # in-stream errors are overload/server errors; failover before content
                kind=from_provider("openai", str(kind) if kind else None, None),
            )
        out: list[StreamDelta] = []
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if delta.get("reasoning_details"):
                self._details(out, delta["reasoning_details"])
                reasoning = None
            self._content(out, reasoning, delta.get("content"))
            for call in delta.get("tool_calls") or ():
                fn = call.get("function") or {}
                self._tool_call(
                    out, call.get("index", 0), call.get("id"), fn.get("name"), fn.get("arguments")
                )
            reason = choice.get("finish_reason")
            if reason:
                out.append(Finish(reason=FINISH_REASONS.get(reason, "stop"), model=chunk.get("model")))
        usage = chunk.get("usage")
        if usage:
            out.append(self._usage(usage))
        return out


class _WireFunction(msgspec.Struct):
    name: str | None = None
    arguments: str | None = None


_NO_FUNCTION = _WireFunction()


class _WireToolCall(msgspec.Struct):
    index: int = 0
    id: str | None = None
    function: _WireFunction | None = None


class _WireDelta(msgspec.Struct):
    content: str | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None
    reasoning_details: list[Any] | None = None
    tool_calls: list[_WireToolCall] | None = None


class _WireChoice(msgspec.Struct):
    index: int = 0
    delta: _WireDelta | None = None
    finish_reason: str | None = None


class _WireChunk(msgspec.Struct):
    """The fields of a chat.completion.chunk the decoder reads; others are skipped unparsed."""

    choices: list[_WireChoice] | None = None
    usage: dict[str, Any] | None = None
    model: str | None = None


_CHUNK = msgspec.json.Decoder(_WireChunk)


@dataclass(frozen=True, kw_only=True)
class OpenAIDialect:
    """How one API speaking Chat Completions differs from OpenAI's own."""

    # The request's max_tokens goes in this field. OpenAI deprecated max_tokens for
    # max_completion_tokens (o-series models require it); most other APIs take max_tokens.
    max_tokens_field: str = "max_tokens"
    # Ask for the final usage chunk with stream_options.include_usage. Some APIs refuse the field
    # (Mistral: 422) and report usage in their last chunk anyway.
    stream_usage: bool = True
    # provider_config keys never forwarded: other formats' keys, and parameters this API refuses
    # (OpenAI and xAI refuse top_k; OpenRouter takes it and passes it on).
    drop_keys: frozenset[str] = FOREIGN_KEYS | {"top_k"}
    headers: Mapping[str, str] = field(default_factory=dict)  # sent with every request
    reports_cost: bool = False  # `usage.cost` is what the call really cost, in USD (OpenRouter)
    # Earlier turns' thinking goes back as `reasoning_details` (OpenRouter: signed / encrypted
    # reasoning the model needs again, e.g. Claude's signatures, OpenAI's encrypted reasoning).
    reasoning_details: bool = False
    path: str = "/v1/chat/completions"  # after the endpoint's base_url
    embeddings_path: str = "/v1/embeddings"
    # Ask for base64 vectors (OpenAI, OpenRouter); APIs not known to encode them are asked for floats.
    embeddings_base64: bool = False


class OpenAIWire(WireFormat):
    stream_scanner = "openai"

    def __init__(self, dialect: OpenAIDialect) -> None:
        self.dialect = dialect
        # Hoisted: read on every request.
        self.max_tokens_field = dialect.max_tokens_field
        self.stream_usage = dialect.stream_usage
        self.skip = dialect.drop_keys
        self.extra_headers = dict(dialect.headers)
        self.report_cost = dialect.reports_cost
        self.path = dialect.path
        # Models with `api: responses` are called through OpenAI's Responses API instead.
        self._responses = ResponsesWire(self.skip, self.extra_headers, self.classify)

    def for_target(self, target: Target) -> WireFormat:
        return self._responses if target.model.api == "responses" else self

    def build(
        self, request: InferenceRequest, target: Target, stream: bool
    ) -> tuple[str, dict[str, str], bytes]:
        body = request_to_wire(
            request,
            target.model.upstream_id,
            stream=stream,
            max_tokens_field=self.max_tokens_field,
            skip=self.skip,
            stream_usage=self.stream_usage,
            reasoning_details=self.dialect.reasoning_details,
        )
        key = target.endpoint.api_key
        headers = {"Authorization": f"Bearer {key}"} if key else {}  # keyless: local servers (vLLM, Ollama)
        headers["Content-Type"] = "application/json"
        headers["Accept"] = "text/event-stream" if stream else "application/json"
        headers.update(self.extra_headers)
        return f"{target.endpoint.base_url}{self.path}", headers, orjson.dumps(body)

    def parse(self, body: bytes) -> ProviderResult:
        data = orjson.loads(body)
        choice = data["choices"][0]
        message = choice.get("message") or {}
        blocks: list[EventBlock] = reasoning_blocks(message.get("reasoning_details"))
        reasoning = message.get("reasoning_content") or message.get("reasoning")
        if reasoning and not blocks:  # reasoning_details, when given, carry the same text and more
            blocks.append(ThinkingBlock(thinking=reasoning))
        if message.get("content"):
            blocks.append(TextBlock(text=message["content"]))
        for call in message.get("tool_calls") or ():
            fn = call.get("function") or {}
            raw = fn.get("arguments") or ""
            blocks.append(
                ToolCallBlock(
                    tool_call=ToolCallOut(
                        id=call.get("id") or "",
                        name=fn.get("name") or "",
                        arguments=parse_arguments(raw),
                        raw_arguments=raw,
                    )
                )
            )
        usage = data.get("usage") or {}
        return ProviderResult(
            blocks=blocks,
            usage=usage_from_wire(usage),
            finish_reason=FINISH_REASONS.get(choice.get("finish_reason") or "stop", "stop"),
            upstream_model=data.get("model"),
            cost=upstream_cost(usage) if self.report_cost else None,
        )

    def decoder(self) -> StreamDecoder:
        return OpenAIDecoder(self.report_cost)

    def build_embedding(self, request: EmbeddingRequest, target: Target) -> tuple[str, dict[str, str], bytes]:
        key = target.endpoint.api_key
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        headers["Content-Type"] = "application/json"
        headers["Accept"] = "application/json"
        headers.update(self.extra_headers)
        body = embedding_wire.openai_body(request, target.model.upstream_id, self.dialect.embeddings_base64)
        return f"{target.endpoint.base_url}{self.dialect.embeddings_path}", headers, body

    def parse_embedding(self, body: bytes, request: EmbeddingRequest) -> EmbeddingResult:
        return embedding_wire.openai_parse(
            body, request, upstream_cost if self.report_cost else lambda _usage: None
        )

    def classify(self, status: int, headers: Mapping[str, str], body: bytes) -> ProviderError:
        err = error_object(body)
        if isinstance(err, str):
            return upstream_error(status, headers, body, message=err, dialect="openai")
        if not isinstance(err, dict):
            return upstream_error(status, headers, body, dialect="openai")
        code = err.get("code") or err.get("type")
        return upstream_error(
            status,
            headers,
            body,
            message=err.get("message"),
            code=code,
            dialect="openai",
            error_type=err.get("type") or err.get("code"),
        )


OPENAI = OpenAIDialect(max_tokens_field="max_completion_tokens", embeddings_base64=True)

KIND = register(
    ProviderKind(
        type="openai",
        wire=lambda _config: OpenAIWire(OPENAI),
        default_base_url="https://api.openai.com",
        cache_ttl=86400.0,
        embeds=True,
    )
)
