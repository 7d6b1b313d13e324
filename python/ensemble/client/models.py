"""Response shapes of the native API (see the README's routes), decoded leniently: fields the gateway adds later are
ignored, fields it omits take their defaults."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Literal

import msgspec

FinishReason = Literal["stop", "length", "tool_use", "content_filter", "error"]


class ToolCall(msgspec.Struct):
    """In a whole answer: id, name, parsed `arguments` and `raw_arguments`. In a stream delta the
    first piece carries id and name, later pieces only more `raw_arguments`."""

    id: str = ""
    name: str = ""
    arguments: dict[str, Any] | None = None
    raw_arguments: str = ""


class TextBlock(msgspec.Struct, tag="text", tag_field="type"):
    text: str = ""
    index: int | None = None  # set on stream deltas: which block the piece belongs to
    citations: list[dict[str, Any]] | None = None  # the provider's sources for this text, verbatim
    citation: dict[str, Any] | None = None  # on a stream delta: one more source


class ToolCallBlock(msgspec.Struct, tag="tool_call", tag_field="type"):
    tool_call: ToolCall = msgspec.field(default_factory=ToolCall)
    index: int | None = None


class ThinkingBlock(msgspec.Struct, tag="thinking", tag_field="type"):
    thinking: str = ""
    signature: str | None = None
    index: int | None = None


class RedactedThinkingBlock(msgspec.Struct, tag="redacted_thinking", tag_field="type"):
    """Encrypted thinking (Anthropic): send `data` back unchanged in the next turn."""

    data: str = ""
    index: int | None = None


class ServerToolBlock(msgspec.Struct, tag="server_tool", tag_field="type"):
    """A tool the provider ran itself (Anthropic web search, code execution…): its block verbatim."""

    block: dict[str, Any] = msgspec.field(default_factory=dict)
    index: int | None = None


class ErrorBlock(msgspec.Struct, tag="error", tag_field="type"):
    error: str = ""
    index: int | None = None


EventBlock = TextBlock | ToolCallBlock | ThinkingBlock | RedactedThinkingBlock | ServerToolBlock | ErrorBlock


class Usage(msgspec.Struct, rename="camel"):
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cache_creation_tokens: int = 0
    reasoning_tokens: int = 0


class Performance(msgspec.Struct):
    ttft_ms: float = 0.0
    upstream_ms: float = 0.0
    overhead_ms: float = 0.0


class RateLimit(msgspec.Struct):
    limit_requests: int = 0
    remaining_requests: int = 0
    limit_tokens: int = 0
    remaining_tokens: int = 0


class InferenceResponse(msgspec.Struct):
    id: str
    model: str
    content: str = ""
    blocks: list[EventBlock] = msgspec.field(default_factory=list)
    provider: str = ""
    endpoint_id: str = ""
    finish_reason: FinishReason = "stop"
    input_tokens: int = 0
    output_tokens: int = 0
    cached_prompt_tokens: int = 0
    cache_creation_tokens: int = 0
    reasoning_tokens: int = 0
    cost: Decimal = Decimal(0)  # USD, exact (the gateway sends a decimal string)
    cost_micro_dollars: int = 0
    usage: Usage = msgspec.field(default_factory=Usage)
    processing_time_ms: float = 0.0
    performance: Performance = msgspec.field(default_factory=Performance)
    rate_limit: RateLimit | None = None

    @property
    def tool_calls(self) -> list[ToolCall]:
        return [b.tool_call for b in self.blocks if isinstance(b, ToolCallBlock)]


class RequestStatus(msgspec.Struct):
    request_id: str
    status: Literal["pending", "streaming", "completed", "failed"] | str
    created_at: str | None = None
    completed_at: str | None = None
    model: str | None = None
    provider: str | None = None


class Capabilities(msgspec.Struct):
    streaming: bool = False
    tools: bool = False
    thinking: bool = False
    vision: bool = False


class Model(msgspec.Struct):
    id: str
    provider: str = ""
    providers: list[str] = msgspec.field(default_factory=list)
    context_window: int | None = None
    max_output_tokens: int | None = None
    pricing: dict[str, Any] = msgspec.field(default_factory=dict)
    capabilities: Capabilities = msgspec.field(default_factory=Capabilities)
    kind: str = "chat"  # "embedding": served by the embeddings routes only


class ModelList(msgspec.Struct):
    models: list[Model]


class BatchSubmission(msgspec.Struct):
    batch_id: str
    status: str
    request_count: int
    created_at: str | float | None = None


class Health(msgspec.Struct):
    status: str
    version: str = ""
    uptime: float | None = None
    providers: dict[str, str] = msgspec.field(default_factory=dict)


_decoders: dict[type[Any], msgspec.json.Decoder[Any]] = {}


def decode(cls: type[Any], data: bytes) -> Any:
    decoder = _decoders.get(cls)
    if decoder is None:
        decoder = _decoders[cls] = msgspec.json.Decoder(cls)
    return decoder.decode(data)


_block_decoder: msgspec.json.Decoder[EventBlock] = msgspec.json.Decoder(EventBlock)


def decode_block(data: bytes) -> EventBlock:
    return _block_decoder.decode(data)
