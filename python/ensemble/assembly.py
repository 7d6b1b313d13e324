"""Assembling StreamDeltas into a whole answer, so streamed and non-streamed calls end identical."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson

from ensemble.types import (
    EventBlock,
    Finish,
    FinishReason,
    ProviderResult,
    RedactedThinkingBlock,
    RedactedThinkingDelta,
    ServerToolBlock,
    ServerToolDelta,
    StreamDelta,
    TextBlock,
    TextDelta,
    ThinkingBlock,
    ThinkingDelta,
    ToolCallArgs,
    ToolCallBlock,
    ToolCallOut,
    ToolCallStart,
    Usage,
    UsageDelta,
)

# Tokens are joined into one string every this many: a str object per token costs ~60 bytes for
# ~5 bytes of text, which at 10,000 open streams of 600 tokens was ~370 MB (benches/soak).
_JOIN_EVERY = 64


class _Pending:
    __slots__ = ("_joined", "block", "citations", "id", "kind", "name", "parts", "signature", "structured")

    def __init__(self, kind: str, id: str = "", name: str = "", structured: bool = False) -> None:
        self.kind = kind
        self.structured = structured
        self.id = id
        self.name = name
        self.parts: list[str] = []
        self._joined = 0  # parts before this index are already joined runs
        self.signature = ""
        self.block: dict[str, Any] | None = None  # a server-tool block, whole
        self.citations: list[dict[str, Any]] | None = None  # a text block's sources

    def add(self, text: str) -> None:
        parts = self.parts
        parts.append(text)
        if len(parts) - self._joined >= _JOIN_EVERY:
            run = "".join(parts[self._joined :])
            del parts[self._joined :]
            parts.append(run)
            self._joined = len(parts)


def parse_arguments(raw: str) -> dict[str, object]:
    """Tool-call arguments as an object; malformed or non-object JSON yields {} (raw stays available)."""
    if not raw.strip():
        return {}
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


class Assembler:
    def __init__(self) -> None:
        self._blocks: dict[int, _Pending] = {}
        self.usage = Usage()
        self.finish_reason: FinishReason | None = None
        self.model: str | None = None
        self.cost: Decimal | None = None
        self.output_chars = 0

    def feed(self, delta: StreamDelta) -> None:
        if isinstance(delta, TextDelta):
            block = self._blocks.get(delta.index)
            if block is None:
                block = self._blocks[delta.index] = _Pending("text")
            block.add(delta.text)
            self.output_chars += len(delta.text)
            if delta.citation is not None:
                if block.citations is None:
                    block.citations = []
                block.citations.append(delta.citation)
        elif isinstance(delta, ThinkingDelta):
            block = self._blocks.get(delta.index)
            if block is None:
                block = self._blocks[delta.index] = _Pending("thinking")
            if delta.thinking:
                block.add(delta.thinking)
            if delta.signature:
                block.signature += delta.signature
            if delta.item_id:
                block.id = delta.item_id
        elif isinstance(delta, ServerToolDelta):
            block = self._blocks[delta.index] = _Pending("server_tool")
            block.block = delta.block
        elif isinstance(delta, RedactedThinkingDelta):
            block = self._blocks[delta.index] = _Pending("redacted_thinking")
            block.add(delta.data)
        elif isinstance(delta, ToolCallStart):
            self._blocks[delta.index] = _Pending("tool_call", delta.id, delta.name, delta.structured)
        elif isinstance(delta, ToolCallArgs):
            block = self._blocks.get(delta.index)
            if block is None:
                block = self._blocks[delta.index] = _Pending("tool_call")
            block.add(delta.fragment)
            self.output_chars += len(delta.fragment)
        elif isinstance(delta, UsageDelta):
            u = self.usage
            if delta.input_tokens is not None:
                u.input_tokens = delta.input_tokens
            if delta.output_tokens is not None:
                u.output_tokens = delta.output_tokens
            if delta.cached_tokens is not None:
                u.cached_tokens = delta.cached_tokens
            if delta.cache_creation_tokens is not None:
                u.cache_creation_tokens = delta.cache_creation_tokens
            if delta.reasoning_tokens is not None:
                u.reasoning_tokens = delta.reasoning_tokens
            if delta.cost is not None:
                self.cost = delta.cost
        elif isinstance(delta, Finish):
            self.finish_reason = delta.reason
            if delta.model:
                self.model = delta.model

    def blocks(self) -> list[EventBlock]:
        out: list[EventBlock] = []
        for index in sorted(self._blocks):
            b = self._blocks[index]
            text = "".join(b.parts)
            if b.kind == "text":
                out.append(TextBlock(text=text, citations=b.citations))
            elif b.kind == "thinking":
                out.append(ThinkingBlock(thinking=text, signature=b.signature or None, item_id=b.id or None))
            elif b.kind == "redacted_thinking":
                out.append(RedactedThinkingBlock(data=text))
            elif b.kind == "server_tool":
                out.append(ServerToolBlock(block=b.block or {}))
            else:
                arguments = parse_arguments(text)
                if b.structured and (arguments or not text.strip()):
                    text = orjson.dumps(arguments).decode()
                out.append(
                    ToolCallBlock(
                        tool_call=ToolCallOut(id=b.id, name=b.name, arguments=arguments, raw_arguments=text)
                    )
                )
        return out

    def result(self) -> ProviderResult:
        return ProviderResult(
            blocks=self.blocks(),
            usage=self.usage,
            finish_reason=self.finish_reason or "stop",
            upstream_model=self.model,
            cost=self.cost,
        )
