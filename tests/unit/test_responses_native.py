"""The Responses stream written natively from TextRuns is the stream written event by event.

Recorded upstream streams (the golden fixtures of every wire format the native scanner reads, and
chat-completions streams of text, reasoning and tool calls, a mid-stream error and max tokens) go
through the translating path: the scanner one run per event (each delta rendered in Python, the
path without TextRuns) and the scanner with merged text runs (TextRuns, their events written by
rust/src/responses_sse.rs). Every read size gives the client the same bytes both ways, and for the
chat streams the framing parser and the decoder alone too.
"""

from __future__ import annotations

import itertools
import struct
from pathlib import Path
from typing import Any

import orjson
import pydantic
import pytest
from openai.types.responses import ResponseStreamEvent

from ensemble._native import responses_deltas
from ensemble.api import responses, responses_events
from ensemble.assembly import Assembler
from ensemble.config.schema import ProviderConfig
from ensemble.errors import EnsembleError
from ensemble.providers import gemini, registry
from ensemble.providers.base import FramingReader, ScanningReader, WireFormat
from ensemble.types import InferenceResponse, Performance, StreamDelta, TextDelta, TextRun, UsageOut

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "providers"
EVENTS: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(ResponseStreamEvent)
ECHO = responses.parse_request(b'{"model":"m","input":"x"}').echo


def _wire(provider_type: str) -> WireFormat:
    wire = registry.kind(provider_type).wire
    assert wire is not None
    return wire(ProviderConfig(name=provider_type, type=provider_type))


WIRES = {t: _wire(t) for t in ("openai", "xai", "openrouter", "openai_compatible", "anthropic", "gemini")}


def chat_stream(deltas: list[dict[str, Any]], finish: str = "stop", error_after: int | None = None) -> bytes:
    """A chat-completions stream as OpenAI frames it: a role chunk, one chunk per delta, the finish
    chunk, the usage chunk, [DONE]; or an error event after `error_after` deltas."""

    def event(body: dict[str, Any]) -> bytes:
        return b"data: " + orjson.dumps(body) + b"\n\n"

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return event(
            {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "m", "choices": [choice]}
        )

    out = chunk({"role": "assistant", "content": ""})
    for i, delta in enumerate(deltas):
        if i == error_after:
            return out + event({"error": {"message": "the model overloaded", "type": "server_error"}})
        out += chunk(delta)
    out += chunk({}, finish)
    usage = {"prompt_tokens": 9, "completion_tokens": len(deltas), "total_tokens": 9 + len(deltas)}
    return out + event({"id": "chatcmpl-1", "choices": [], "usage": usage}) + b"data: [DONE]\n\n"


TEXT = [{"content": t} for t in ["Hel", "lo", ' "w\\o\nrld"', "\t\u00e9", "\U0001f600", "\x01\x1f", "."]]
CALL = [
    {
        "tool_calls": [
            {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": ""}}
        ]
    },
    *({"tool_calls": [{"index": 0, "function": {"arguments": a}}]} for a in ['{"a"', ":", '"x"}']),
]
THOUGHT = [{"reasoning_content": t} for t in ["Let me", " think", "."]]
CHAT_STREAMS = {
    "text": chat_stream(TEXT),
    "max-tokens": chat_stream(TEXT, finish="length"),
    "mid-stream-error": chat_stream(TEXT, error_after=4),
    "reasoning-text-tool": chat_stream([*THOUGHT, *TEXT[:3], *CALL], finish="tool_calls"),
    "text-tool-text": chat_stream([*TEXT[:3], *CALL, *TEXT[3:]], finish="tool_calls"),
}
CASES = [("openai", name, raw) for name, raw in CHAT_STREAMS.items()] + [
    (path.parent.name, path.stem, path.read_bytes())
    for path in sorted(FIXTURES.glob("*/*.stream.txt"))
    if path.parent.name in WIRES
]


def answer(result: Any) -> InferenceResponse:
    u = result.usage
    return InferenceResponse(
        id="req_0001",
        model="m",
        provider="p",
        endpoint_id="e",
        blocks=result.blocks,
        content="",
        finish_reason=result.finish_reason,
        input_tokens=u.input_tokens,
        output_tokens=u.output_tokens,
        cached_prompt_tokens=u.cached_tokens,
        cache_creation_tokens=u.cache_creation_tokens,
        reasoning_tokens=u.reasoning_tokens,
        cost="0.001",
        cost_micro_dollars=1000,
        usage=UsageOut(u.input_tokens, u.output_tokens, u.cached_tokens, u.cache_creation_tokens, 0),
        processing_time_ms=1.0,
        performance=Performance(1.0, 1.0, 0.0),
    )


def client_bytes(wire: WireFormat, raw: bytes, path: str, read: int) -> tuple[bytes, list[StreamDelta]]:
    """What the Responses client gets when the upstream's bytes arrive `read` bytes at a time
    (Gemini's generated call ids counted from 0, not random)."""
    with pytest.MonkeyPatch.context() as patch:
        calls = itertools.count()
        patch.setattr(gemini, "new_call_id", lambda: f"call_{next(calls)}")
        return _client_bytes(wire, raw, path, read)


def _client_bytes(wire: WireFormat, raw: bytes, path: str, read: int) -> tuple[bytes, list[StreamDelta]]:
    decoder = wire.decoder()
    reader = {
        "framing": lambda: FramingReader(wire, decoder),
        "events": lambda: ScanningReader(wire, decoder, merge=False),
        "runs": lambda: ScanningReader(wire, decoder, merge=False, event_runs=True),
    }[path]()
    writer = responses_events.EventWriter("req_0001", "m", ECHO, None, include_encrypted=True)
    assembler = Assembler()
    out, seen = [writer.start()], []
    try:
        for i in range(0, len(raw), read):
            batch = reader.read(raw[i : i + read])
            seen += batch
            for delta in batch:
                assembler.feed(delta)
            out += [frame for delta in batch if (frame := writer.render(delta))]
        reader.close()
        out.append(writer.finish(answer(assembler.result())))
    except EnsembleError as e:
        out.append(writer.error(e, "req_0001"))
    return b"".join(out), seen


@pytest.fixture(autouse=True)
def _same_second(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(responses_events.time, "time", lambda: 1_700_000_000.0)


@pytest.mark.parametrize(("provider", "name", "raw"), CASES, ids=[f"{p}-{n}" for p, n, _ in CASES])
def test_native_text_runs_write_the_events_one_by_one_would(provider: str, name: str, raw: bytes) -> None:
    wire = WIRES[provider]
    for read in (len(raw), 97, 7, 1):
        reference, _ = client_bytes(wire, raw, "events", read)
        assert client_bytes(wire, raw, "runs", read)[0] == reference, read
        if name in CHAT_STREAMS:
            assert client_bytes(wire, raw, "framing", read)[0] == reference, read
    reference, _ = client_bytes(wire, raw, "events", len(raw))
    _, deltas = client_bytes(wire, raw, "runs", len(raw))
    events = [EVENTS.validate_json(f.split(b"data: ", 1)[1]) for f in reference.split(b"\n\n") if f]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    if name in CHAT_STREAMS and name != "mid-stream-error":  # in one read: one run per block
        assert any(isinstance(d, TextRun) for d in deltas)
    if name == "mid-stream-error":
        assert [e.type for e in events[-2:]] == ["error", "response.failed"]
    if name == "max-tokens":
        assert events[-1].type == "response.incomplete"


def test_a_run_of_the_open_text_item_is_one_native_call() -> None:
    writer = responses_events.EventWriter("req_0001", "m", {}, None, include_encrypted=False)
    one_by_one = responses_events.EventWriter("req_0001", "m", {}, None, include_encrypted=False)
    first = writer.render(TextDelta(index=0, text="a"))
    assert first == one_by_one.render(TextDelta(index=0, text="a"))
    ends = struct.pack("<3I", 1, 1, 4)
    run = writer.render(TextRun(index=0, text="bé!", ends=ends))
    assert run == b"".join(one_by_one.render(TextDelta(index=0, text=t)) or b"" for t in ("b", "", "é!"))
    assert run is not None and run.count(b"event: response.output_text.delta") == 2


@pytest.mark.parametrize("ends", [struct.pack("<I", 2), struct.pack("<2I", 3, 1), b"\x01\x00", b""])
def test_ends_that_do_not_cut_the_whole_text_are_refused(ends: bytes) -> None:
    with pytest.raises(ValueError, match="ends"):
        responses_deltas(b"<", b">", 0, "ab\u00e9", ends)
