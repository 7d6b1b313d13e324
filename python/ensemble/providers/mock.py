"""The `mock` provider: answers locally and deterministically, so every route works with no account.

The answer echoes the start of the last user message; with tools offered (and tool_choice not
"none") it calls the first or forced tool instead, with arguments built from the tool's schema.
`provider_config: {thinking: true}` adds a thinking block. Latency and chunking come from the
provider file's `mock:` options. Tokens: prompt = characters/4 (at least 1), answer = its words.

Models marked `kind: embedding` embed: each input's vector is derived from a hash of it (same input,
same vector; unit length; `dimensions` wide, 256 when not asked), tokens as for a prompt.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import orjson

from ensemble import vectors
from ensemble.assembly import Assembler
from ensemble.config.durations import Duration
from ensemble.config.schema import ProviderConfig
from ensemble.providers.base import CallOptions, Provider, Target
from ensemble.providers.registry import ProviderKind, register
from ensemble.types import (
    EmbeddingRequest,
    EmbeddingResult,
    Finish,
    InferenceRequest,
    ProviderResult,
    StreamDelta,
    TextDelta,
    ThinkingDelta,
    ToolCallArgs,
    ToolCallStart,
    ToolChoiceNamed,
    Usage,
    UsageDelta,
)

MOCK_DIMENSIONS = 256

_PLACEHOLDER = {"string": "test", "number": 1, "integer": 1, "boolean": True, "array": [], "object": {}}


def example_arguments(schema: dict[str, Any]) -> dict[str, Any]:
    props = schema.get("properties") or {}
    required = schema.get("required") or list(props)[:1]
    out: dict[str, Any] = {}
    for name in required:
        spec = props.get(name) or {}
        if isinstance(spec, dict) and isinstance(spec.get("enum"), list) and spec["enum"]:
            out[name] = spec["enum"][0]
        else:
            kind = spec.get("type", "string") if isinstance(spec, dict) else "string"
            out[name] = _PLACEHOLDER.get(kind if isinstance(kind, str) else "string", "test")
    return out


def prompt_tokens(request: InferenceRequest) -> int:
    chars = sum(len(m.text()) for m in request.messages)
    return max(1, chars // 4)


class MockOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """How the mock answers: the provider file's `mock:` block."""

    latency: Duration = Duration(0)
    chunks: int = 8
    chunk_gap: Duration = Duration(0)


class MockProvider(Provider):
    def __init__(self, config: ProviderConfig) -> None:
        super().__init__(config, needs_key=False)
        self.options = config.options if isinstance(config.options, MockOptions) else MockOptions()

    def _plan(self, request: InferenceRequest) -> list[StreamDelta]:
        deltas: list[StreamDelta] = []
        index = 0
        last = request.messages[-1]
        if request.provider_config and request.provider_config.get("thinking"):
            thought = "Let me think about this mock request."
            deltas.append(ThinkingDelta(index=index, thinking=thought))
            deltas.append(
                ThinkingDelta(
                    index=index, signature="mock-sig-" + hashlib.sha256(thought.encode()).hexdigest()[:16]
                )
            )
            index += 1
        wants_tool = bool(request.tools) and request.tool_choice != "none" and last.role == "user"
        output_tokens = 0
        if wants_tool and request.tools:
            tool = request.tools[0]
            if isinstance(request.tool_choice, ToolChoiceNamed):
                tool = next((t for t in request.tools if t.name == request.tool_choice.name), tool)
            raw = orjson.dumps(example_arguments(tool.parameters)).decode()
            call_id = "call_" + hashlib.sha256(f"{tool.name}{last.text()}".encode()).hexdigest()[:24]
            deltas.append(ToolCallStart(index=index, id=call_id, name=tool.name))
            mid = len(raw) // 2
            deltas += [
                ToolCallArgs(index=index, fragment=raw[:mid]),
                ToolCallArgs(index=index, fragment=raw[mid:]),
            ]
            output_tokens = max(1, len(raw) // 4)
            reason = "tool_use"
        else:
            said = " ".join(last.text().split()[:12]) or "(nothing)"
            words = f"This is a mock answer from Ensemble. You said: {said}".split(" ")
            reason = "stop"
            if request.max_tokens is not None and request.max_tokens < len(words):
                words = words[: max(request.max_tokens, 0)]
                reason = "length"
            output_tokens = len(words)
            pieces = _split(words, max(self.options.chunks, 1))
            deltas += [TextDelta(index=index, text=p) for p in pieces]
        deltas.append(UsageDelta(input_tokens=prompt_tokens(request), output_tokens=output_tokens))
        deltas.append(Finish(reason=reason, model=request.model))  # type: ignore[arg-type]
        return deltas

    async def complete(self, request: InferenceRequest, target: Target, opts: CallOptions) -> ProviderResult:
        if self.options.latency:
            await asyncio.sleep(self.options.latency)
        assembler = Assembler()
        for delta in self._plan(request):
            assembler.feed(delta)
        return assembler.result()

    async def stream(
        self,
        request: InferenceRequest,
        target: Target,
        opts: CallOptions,
        raw: bool = False,
    ) -> AsyncIterator[list[StreamDelta]]:
        if self.options.latency:
            await asyncio.sleep(self.options.latency)
        gap = self.options.chunk_gap
        batch: list[StreamDelta] = []
        for i, delta in enumerate(self._plan(request)):
            if gap and i and isinstance(delta, TextDelta | ToolCallArgs):
                if batch:
                    yield batch
                    batch = []
                await asyncio.sleep(gap)
            batch.append(delta)
        if batch:
            yield batch

    async def embed(self, request: EmbeddingRequest, target: Target, opts: CallOptions) -> EmbeddingResult:
        if self.options.latency:
            await asyncio.sleep(self.options.latency)
        width = request.dimensions or MOCK_DIMENSIONS
        texts = [t if isinstance(t, str) else " ".join(map(str, t)) for t in request.inputs]
        tokens = sum(max(1, len(t) // 4) if isinstance(t, str) else max(1, len(t)) for t in request.inputs)
        return EmbeddingResult(
            vectors=[mock_vector(text, width) for text in texts],
            usage=Usage(input_tokens=tokens),
            upstream_model=request.model,
        )


def mock_vector(text: str, width: int) -> bytes:
    """A unit vector of `width` components read from a hash chain seeded by `text`."""
    raw = b""
    block = text.encode()
    while len(raw) < 2 * width:
        block = hashlib.blake2b(block, digest_size=64).digest()
        raw += block
    components = [int.from_bytes(raw[2 * i : 2 * i + 2], "little", signed=True) for i in range(width)]
    norm = math.sqrt(sum(c * c for c in components)) or 1.0
    return vectors.pack(c / norm for c in components)


def _split(words: list[str], parts: int) -> list[str]:
    """Join words back with their spaces, cut into at most `parts` nearly equal pieces."""
    if not words:
        return []
    parts = min(parts, len(words))
    size, extra = divmod(len(words), parts)
    out, start = [], 0
    for i in range(parts):
        end = start + size + (1 if i < extra else 0)
        piece = " ".join(words[start:end])
        out.append(piece if i == 0 else " " + piece)
        start = end
    return out


KIND = register(
    ProviderKind(
        type="mock",
        build=lambda config, _client: MockProvider(config),
        local=True,
        options=MockOptions,
        needs_credential=lambda _config: False,
        embeds=True,
    )
)
