"""The canonical shapes every ingress format is parsed into and every provider answer is turned into.

InferenceRequest  — what the client asked for, whatever format it spoke.
StreamDelta       — one increment of an answer (text, thinking, a tool-call fragment, usage, finish).
ProviderResult    — a whole answer from one provider call: blocks, usage, finish reason.
InferenceResponse — the native response shape (see the README's routes), priced and timed.
EmbeddingRequest  — texts (or token arrays) to turn into vectors, whatever format asked.
EmbeddingResult   — the vectors one provider call returned, with usage, before pricing.
EmbeddingResponse — an EmbeddingResult priced and timed, for the ingress format to render.
"""

from __future__ import annotations

import struct
from decimal import Decimal
from typing import Any, Literal

import msgspec

Role = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "tool_use", "content_filter", "error"]


# --- request ---------------------------------------------------------------------------------


class MediaSource(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    type: Literal["base64", "url"]
    media_type: str | None = None
    data: str | None = None
    url: str | None = None


class TextContent(
    msgspec.Struct, tag="text", tag_field="type", forbid_unknown_fields=True, omit_defaults=True
):
    text: str
    cache_control: dict[str, Any] | None = None  # Anthropic prompt-cache breakpoint; others ignore it


class ImageContent(
    msgspec.Struct, tag="image", tag_field="type", forbid_unknown_fields=True, omit_defaults=True
):
    source: MediaSource
    cache_control: dict[str, Any] | None = None


class DocumentContent(
    msgspec.Struct, tag="document", tag_field="type", forbid_unknown_fields=True, omit_defaults=True
):
    source: MediaSource
    cache_control: dict[str, Any] | None = None


class AudioContent(msgspec.Struct, tag="audio", tag_field="type", forbid_unknown_fields=True):
    source: MediaSource


class ThinkingContent(
    msgspec.Struct, tag="thinking", tag_field="type", forbid_unknown_fields=True, omit_defaults=True
):
    """A thinking block echoed back in a multi-turn conversation (providers require the signature).

    `origin` is the provider type whose model made the signature (OpenAI's `encrypted_content`,
    Anthropic's `signature`, Gemini's `thoughtSignature`); None when the client did not say. A
    signature goes back only to a provider of its origin (ensemble.reasoning); `item_id` is the
    id the provider gave the reasoning item, where its API wants it back (OpenAI Responses)."""

    thinking: str
    signature: str | None = None
    origin: str | None = None
    item_id: str | None = None


class RedactedThinkingContent(
    msgspec.Struct, tag="redacted_thinking", tag_field="type", forbid_unknown_fields=True
):
    """Encrypted thinking (Anthropic) echoed back verbatim in a multi-turn conversation."""

    data: str


class ServerToolContent(msgspec.Struct, tag="server_tool", tag_field="type", forbid_unknown_fields=True):
    """A provider-run tool's block echoed back in a multi-turn conversation (Anthropic
    `server_tool_use`, `web_search_tool_result`, code-execution results…), kept verbatim: only the
    provider that ran the tool can read it."""

    block: dict[str, Any]


ContentBlock = (
    TextContent
    | ImageContent
    | DocumentContent
    | AudioContent
    | ThinkingContent
    | RedactedThinkingContent
    | ServerToolContent
)


class ToolCall(msgspec.Struct, forbid_unknown_fields=True):
    id: str
    name: str
    arguments: dict[str, Any] | str = msgspec.field(default_factory=dict)


class Message(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    role: Role
    content: str | list[ContentBlock] = ""
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    name: str | None = None
    is_error: bool | None = None  # tool messages: the tool failed (Anthropic's tool_result.is_error)

    def text(self) -> str:
        """All text of this message joined (images and other media are skipped)."""
        if isinstance(self.content, str):
            return self.content
        return "".join(b.text for b in self.content if isinstance(b, TextContent))


class ToolDefinition(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    name: str
    description: str = ""
    parameters: dict[str, Any] = msgspec.field(default_factory=lambda: {"type": "object", "properties": {}})
    strict: bool | None = None
    cache_control: dict[str, Any] | None = None  # Anthropic prompt-cache breakpoint; others ignore it


class ToolChoiceNamed(msgspec.Struct, forbid_unknown_fields=True):
    name: str


ToolChoice = Literal["auto", "none", "required"] | ToolChoiceNamed


class ResponseFormat(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Structured output the client asked for, whatever its format called it (OpenAI
    `response_format`, Responses `text.format`, Anthropic `output_format`, Gemini
    `responseSchema`/`responseJsonSchema` + `responseMimeType`): plain text, any JSON object, or
    JSON matching `schema`. Each provider adapter writes it in its own API's mechanism."""

    type: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    schema: dict[str, Any] | None = None
    description: str | None = None
    strict: bool | None = None


class InferenceRequest(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    model: str
    messages: list[Message]
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop_sequences: list[str] | None = None
    tools: list[ToolDefinition] | None = None
    tool_choice: ToolChoice | None = None
    stream: bool = False
    session_id: str | None = None
    provider_config: dict[str, Any] | None = None
    response_format: ResponseFormat | None = None


# --- answer ----------------------------------------------------------------------------------


class Usage(msgspec.Struct):
    """Token counts. `input_tokens` is the whole prompt, cached and cache-written tokens included;
    `output_tokens` includes reasoning tokens. Adapters normalise each provider to this meaning."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cache_creation_tokens: int = 0
    reasoning_tokens: int = 0


class ToolCallOut(msgspec.Struct):
    id: str
    name: str
    arguments: dict[str, Any]
    raw_arguments: str


class TextBlock(msgspec.Struct, tag="text", tag_field="type", omit_defaults=True):
    text: str
    # The provider's sources for this text (Anthropic `citations`: web search results, documents),
    # verbatim; absent when it gave none.
    citations: list[dict[str, Any]] | None = None


class ToolCallBlock(msgspec.Struct, tag="tool_call", tag_field="type"):
    tool_call: ToolCallOut


class ThinkingBlock(msgspec.Struct, tag="thinking", tag_field="type"):
    thinking: str
    signature: str | None = None
    # The provider type that made `signature` (stamped by the gateway), and the provider's id of the
    # reasoning item where it has one: see ThinkingContent.
    origin: str | None = None
    item_id: str | None = None


class RedactedThinkingBlock(msgspec.Struct, tag="redacted_thinking", tag_field="type"):
    """Thinking the provider returned encrypted (Anthropic `redacted_thinking`); `data` must be sent
    back unchanged in the next turn."""

    data: str


class ServerToolBlock(msgspec.Struct, tag="server_tool", tag_field="type"):
    """A tool the provider ran itself (Anthropic `server_tool_use` and its `*_tool_result`: web
    search, web fetch, code execution…): not a call for the client to make. `block` is the
    provider's block verbatim, so its own format can show it and hand it back."""

    block: dict[str, Any]


class ErrorBlock(msgspec.Struct, tag="error", tag_field="type"):
    error: str


EventBlock = TextBlock | ToolCallBlock | ThinkingBlock | RedactedThinkingBlock | ServerToolBlock | ErrorBlock


# Stream deltas, as provider adapters decode them. `index` is the block's position in the answer.


class TextDelta(msgspec.Struct, tag="text_delta"):
    index: int
    text: str
    citation: dict[str, Any] | None = None  # one more source for the block's text (Anthropic citations_delta)


class TextRun(TextDelta, tag="text_run"):
    """The text of several upstream events of one network read for one block, merged (assembled as
    one TextDelta), with where each event's fragment ends: `ends`, UTF-8 byte offsets into `text` as
    little-endian u32. Only a stream format that renders one event per upstream event asks for these
    (`event_runs`), so its client keeps the provider's granularity."""

    ends: bytes = b""

    def fragments(self) -> list[str]:
        """The events' fragments of `text`, in order."""
        raw, start, out = self.text.encode(), 0, []
        for (end,) in struct.iter_unpack("<I", self.ends):
            out.append(raw[start:end].decode())
            start = end
        return out


class ThinkingDelta(msgspec.Struct, tag="thinking_delta"):
    index: int
    thinking: str = ""
    signature: str = ""
    item_id: str = ""  # the provider's id of the reasoning item (OpenAI Responses), on any delta of it


class RedactedThinkingDelta(msgspec.Struct, tag="redacted_thinking_delta"):
    """A whole redacted-thinking block (it never arrives in pieces)."""

    index: int
    data: str


class ServerToolDelta(msgspec.Struct, tag="server_tool_delta"):
    """A whole server-tool block (its input is complete before it is handed on)."""

    index: int
    block: dict[str, Any]


class ToolCallStart(msgspec.Struct, tag="tool_call_start"):
    index: int
    id: str
    name: str
    # The provider gives arguments as an object (Anthropic, Gemini), so its answer has no argument
    # text of its own: raw_arguments is then the compact JSON of the object, streamed or not.
    structured: bool = False


class ToolCallArgs(msgspec.Struct, tag="tool_call_args"):
    index: int
    fragment: str


class UsageDelta(msgspec.Struct, tag="usage"):
    """Usage as reported so far; fields that are None were not reported by this event."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_tokens: int | None = None
    cache_creation_tokens: int | None = None
    reasoning_tokens: int | None = None
    cost: Decimal | None = None  # the provider's own charge for the call, where it reports one


class Finish(msgspec.Struct, tag="finish"):
    reason: FinishReason
    model: str | None = None


StreamDelta = (
    TextDelta
    | ThinkingDelta
    | RedactedThinkingDelta
    | ServerToolDelta
    | ToolCallStart
    | ToolCallArgs
    | UsageDelta
    | Finish
)


class ProviderResult(msgspec.Struct):
    """A complete answer from one upstream call, before pricing."""

    blocks: list[EventBlock]
    usage: Usage
    finish_reason: FinishReason
    upstream_model: str | None = None
    # The provider's own charge (OpenRouter `usage.cost`); when set it is the cost, not the price list.
    cost: Decimal | None = None


class UsageOut(msgspec.Struct, rename="camel"):
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    cache_creation_tokens: int
    reasoning_tokens: int


class Performance(msgspec.Struct):
    ttft_ms: float
    upstream_ms: float
    overhead_ms: float


class RateLimitInfo(msgspec.Struct):
    limit_requests: int
    remaining_requests: int
    limit_tokens: int
    remaining_tokens: int


class InferenceResponse(msgspec.Struct):
    id: str
    model: str
    provider: str
    endpoint_id: str
    blocks: list[EventBlock]
    content: str
    finish_reason: FinishReason
    input_tokens: int
    output_tokens: int
    cached_prompt_tokens: int
    cache_creation_tokens: int
    reasoning_tokens: int
    cost: str
    cost_micro_dollars: int
    usage: UsageOut
    processing_time_ms: float
    performance: Performance
    rate_limit: RateLimitInfo | None = None


# --- embeddings ------------------------------------------------------------------------------


class EmbeddingRequest(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """`inputs` are texts, or (OpenAI's pre-tokenised form) token-id arrays, one vector each."""

    model: str
    inputs: list[str] | list[list[int]]
    dimensions: int | None = None  # a shorter vector, where the model supports it
    user: str | None = None  # the end user, for the provider's abuse monitoring (OpenAI `user`)
    task_type: str | None = None  # Gemini `taskType` (RETRIEVAL_QUERY, …); others ignore it
    title: str | None = None  # Gemini `title` of a RETRIEVAL_DOCUMENT; others ignore it

    def tokenised(self) -> bool:
        return bool(self.inputs) and not isinstance(self.inputs[0], str)


class EmbeddingResult(msgspec.Struct):
    """Vectors as packed little-endian float32 (what OpenAI's base64 encodes), one per input, in order:
    4 bytes a dimension, so a 3072-wide batch costs no Python float objects until a client wants JSON
    numbers. `usage.input_tokens` is what was billed; embeddings have no output tokens."""

    vectors: list[bytes]
    usage: Usage
    upstream_model: str | None = None
    cost: Decimal | None = None  # the provider's own charge (OpenRouter), else priced from the config


class EmbeddingResponse(msgspec.Struct):
    id: str
    model: str
    provider: str
    endpoint_id: str
    vectors: list[bytes]
    input_tokens: int
    cost: str
    cost_micro_dollars: int
    processing_time_ms: float
    performance: Performance
    rate_limit: RateLimitInfo | None = None
