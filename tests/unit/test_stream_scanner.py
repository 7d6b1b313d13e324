"""The native stream scanner (the same-format fast path) against the provider decoders alone.

Whatever the split of a stream into network reads, ScanningReader must give the assembler what
FramingReader gives it for the same reads: the same answer, usage, finish reason, model and
characters counted, or the same error at the same point; and what it lets through to the client
must be the stream's own bytes, whole events at a time.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_provider_golden import WIRES as PROVIDER_WIRES

from ensemble._native import StreamScanner
from ensemble.assembly import Assembler
from ensemble.errors import ProviderError
from ensemble.providers.anthropic import AnthropicWire
from ensemble.providers.base import FramingReader, ScanningReader, WireFormat
from ensemble.providers.gemini import GeminiWire
from ensemble.providers.openai import OPENAI, OpenAIWire
from support.recorded_streams import RECORDINGS, body

WIRES: dict[str, WireFormat] = {
    "openai": OpenAIWire(OPENAI),
    "anthropic": AnthropicWire(),
    "gemini": GeminiWire(),
}


def assemble(wire: WireFormat, pieces: list[bytes], native: bool) -> tuple[Any, ...]:
    """(result, output chars, error) of decoding `pieces` as consecutive network reads."""
    decoder = wire.decoder()
    reader = ScanningReader(wire, decoder) if native else FramingReader(wire, decoder)
    asm = Assembler()
    error = None
    try:
        for piece in pieces:
            for delta in reader.read(piece):
                asm.feed(delta)
        reader.close()
    except ProviderError as e:
        error = (type(e).__name__, e.message, e.code, e.retryable, e.status)
    except Exception as e:  # a decoder bug on an odd event must at least be the same bug both ways
        error = (type(e).__name__, str(e))
    try:
        result: Any = asm.result()
    except TypeError as e:  # e.g. a number where text belongs, kept by the decoder as it came
        result = type(e).__name__
    return result, asm.output_chars, error


def split(body: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(body) + 1) for c in cuts})
    edges = [0, *points, len(body)]
    return [body[a:b] for a, b in itertools.pairwise(edges) if b > a]


@pytest.mark.parametrize("name", list(RECORDINGS))
def test_recorded_streams_whole(name: str) -> None:
    wire = WIRES[RECORDINGS[name][0]]
    canonical = assemble(wire, [body(name)], native=False)
    assert canonical[0].blocks or canonical[2], "the recording decodes to something"
    assert assemble(wire, [body(name)], native=True) == canonical


@pytest.mark.parametrize("name", list(RECORDINGS))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cuts=st.lists(st.integers(min_value=0, max_value=1 << 20), max_size=12))
def test_recorded_streams_on_random_splits(name: str, cuts: list[int]) -> None:
    wire = WIRES[RECORDINGS[name][0]]
    pieces = split(body(name), cuts)
    # The same reads both ways: a stream that fails keeps what the reads before the failure gave.
    assert assemble(wire, pieces, native=True) == assemble(wire, pieces, native=False)


@pytest.mark.parametrize("name", [n for n in RECORDINGS if not n.endswith("_error")])
@settings(max_examples=30, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=1 << 20), max_size=12))
def test_what_goes_to_the_client_is_the_stream_in_whole_events(name: str, cuts: list[int]) -> None:
    kind = RECORDINGS[name][0]
    reader = ScanningReader(WIRES[kind], WIRES[kind].decoder())
    sent = []
    for piece in split(body(name), cuts):
        reader.read(piece)
        sent.append(reader.out)
        if reader.out:  # a blank line ends what went out (its CR may go before its LF)
            assert b"".join(sent).endswith((b"\n\n", b"\r\n\r\n", b"\r\n\r")), reader.out[-20:]
    assert reader.close() == b""
    assert b"".join(sent) == body(name)


def test_an_unterminated_last_event_goes_out_at_the_end() -> None:
    reader = ScanningReader(WIRES["openai"], WIRES["openai"].decoder())
    reader.read(b'data: {"choices":[]}\n\ndata: [DONE]\n')
    assert reader.out == b'data: {"choices":[]}\n\n'
    assert reader.close() == b"data: [DONE]\n"


def deltas(reader: FramingReader | ScanningReader, pieces: list[bytes]) -> list[Any]:
    out: list[Any] = []
    try:
        for piece in pieces:
            out.append(reader.read(piece))
    except ProviderError as e:
        out.append((e.message, e.code))
    return out


@pytest.mark.parametrize("name", list(RECORDINGS))
@settings(max_examples=30, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=1 << 20), max_size=12))
def test_unmerged_runs_are_the_decoders_deltas_one_for_one(name: str, cuts: list[int]) -> None:
    """The translating path renders every delta as a client event: unmerged, the scanner gives the
    very deltas the decoder gives, read by read, so clients keep the provider's granularity."""
    wire = WIRES[RECORDINGS[name][0]]
    pieces = split(body(name), cuts)
    native = deltas(ScanningReader(wire, wire.decoder(), merge=False), pieces)
    assert native == deltas(FramingReader(wire, wire.decoder()), pieces)


# The providers' documented streams (tests/fixtures/providers), each read with its own provider
# type's wire where that wire is scanned: OpenRouter's reasoning_details, xAI's and DeepSeek's
# reasoning, Anthropic's server tools, Gemini's signatures.
GOLDEN = [
    (path.parent.name, path.stem, path.read_bytes())
    for path in sorted(
        (Path(__file__).resolve().parents[1] / "fixtures" / "providers").glob("*/*.stream.txt")
    )
    if PROVIDER_WIRES[path.parent.name].stream_scanner is not None
]


@pytest.mark.parametrize(("provider", "name", "raw"), GOLDEN, ids=[f"{p}-{n}" for p, n, _ in GOLDEN])
def test_documented_streams_alike_whole_and_byte_by_byte(provider: str, name: str, raw: bytes) -> None:
    wire = PROVIDER_WIRES[provider]

    def decoded(pieces: list[bytes], native: bool) -> str:
        # Gemini names no tool call: the decoder makes each an id of its own.
        return re.sub(r"call_[0-9a-f]{24}", "call_…", repr(assemble(wire, pieces, native)))

    canonical = decoded([raw], native=False)
    assert "blocks=[]" not in canonical, "the recording decodes to something"
    assert decoded([raw], native=True) == canonical
    assert decoded([raw[i : i + 1] for i in range(len(raw))], native=True) == canonical


@pytest.mark.parametrize("name", list(RECORDINGS))
def test_byte_by_byte(name: str) -> None:
    kind = RECORDINGS[name][0]
    raw = body(name)
    pieces = [raw[i : i + 1] for i in range(len(raw))]
    assert assemble(WIRES[kind], pieces, native=True) == assemble(WIRES[kind], pieces, native=False)


def test_the_common_events_are_decoded_natively() -> None:
    """The point of the scanner: text fragments after the first never reach Python one by one."""
    for name, (kind, _) in RECORDINGS.items():
        scanner = StreamScanner(kind)
        cut, items = scanner.feed(body(name))
        assert cut == len(body(name))
        hot, rare = scanner.counts
        assert hot + rare >= 4, name
        if name.endswith("_text"):
            assert hot > rare, (name, hot, rare)
            runs = [item for item in items if item[0] == 0]
            assert len(runs) == 1, (name, items)  # one whole read: one text run


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="wire format"):
        StreamScanner("cohere")


def test_a_line_over_the_bound_is_a_malformed_stream() -> None:
    reader = ScanningReader(WIRES["openai"], WIRES["openai"].decoder())
    with pytest.raises(ProviderError) as e:
        reader.read(b"data: " + b"x" * (1 << 20) + b"\n")
    assert e.value.code == "bad_upstream_stream"


# --- random streams ------------------------------------------------------------------------------

# Text that survives orjson (no lone surrogates), escapes and non-ASCII included.
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
NULLISH = st.sampled_from([None, "", 0, [], {}, "x", 5, True])


def _openai_event(draw: Any) -> str:
    shape = draw(st.integers(0, 9))
    if shape == 0:
        return "[DONE]"
    if shape == 1:
        return orjson.dumps({"error": {"message": draw(TEXT)}}).decode()
    if shape == 2:
        return draw(
            st.sampled_from(
                ["{", "[]", '"x"', '{"choices": 5}', '{"choices":[{"delta":{"content":"\\ud800"}}]}']
            )
        )
    delta: dict[str, Any] = {}
    if shape in (3, 4, 5):
        delta["content"] = draw(TEXT)
    if shape in (5, 6):
        delta[draw(st.sampled_from(["reasoning_content", "reasoning"]))] = draw(TEXT)
    if shape == 7:
        call: dict[str, Any] = {"index": draw(st.integers(0, 2)), "function": {"arguments": draw(TEXT)}}
        if draw(st.booleans()):
            call["id"], call["function"]["name"] = "call_" + draw(TEXT), draw(TEXT)
        delta["tool_calls"] = [call]
    if shape == 8:
        delta["content"] = draw(NULLISH)
    choice: dict[str, Any] = {"index": draw(st.sampled_from([0, 0, 0, 1])), "delta": delta}
    if draw(st.integers(0, 9)) == 0:
        choice["finish_reason"] = draw(st.sampled_from(["stop", "length", "tool_calls", None]))
    chunk: dict[str, Any] = {"choices": [choice]}
    if shape == 9:
        chunk = {"choices": [], "usage": {"prompt_tokens": draw(st.integers(0, 99)), "completion_tokens": 3}}
    return orjson.dumps(chunk).decode()


def _anthropic_event(draw: Any) -> tuple[str, str]:
    shape = draw(st.integers(0, 7))
    index = draw(st.integers(0, 2))
    if shape == 0:
        payload: dict[str, Any] = {"type": "ping"}
    elif shape == 1:
        block = draw(
            st.sampled_from(
                [
                    {"type": "text", "text": ""},
                    {"type": "thinking", "thinking": ""},
                    {"type": "tool_use", "id": "t", "name": "f", "input": {}},
                ]
            )
        )
        payload = {"type": "content_block_start", "index": index, "content_block": block}
    elif shape == 2:
        payload = {"type": "content_block_stop", "index": index}
    elif shape == 6:
        payload = {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn"},
            "usage": {"output_tokens": 3},
        }
    elif shape == 7:
        payload = {
            "type": "content_block_delta",
            "index": index,
            "delta": {"type": "text_delta", "text": draw(NULLISH)},
        }
    else:
        kind, field = draw(
            st.sampled_from(
                [("text_delta", "text"), ("thinking_delta", "thinking"), ("input_json_delta", "partial_json")]
            )
        )
        payload = {"type": "content_block_delta", "index": index, "delta": {"type": kind, field: draw(TEXT)}}
    return payload["type"], orjson.dumps(payload).decode()


def _gemini_event(draw: Any) -> str:
    parts: list[dict[str, Any]] = []
    for _ in range(draw(st.integers(0, 2))):
        shape = draw(st.integers(0, 4))
        if shape == 0:
            parts.append({"functionCall": {"id": "c", "name": "f", "args": {"a": draw(TEXT)}}})
        elif shape == 1:
            parts.append({"text": draw(TEXT), "thought": True})
        else:
            parts.append({"text": draw(TEXT)})
    candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}}
    if draw(st.integers(0, 6)) == 0:
        candidate["finishReason"] = "STOP"
    chunk: dict[str, Any] = {"candidates": [candidate]}
    if draw(st.booleans()):
        chunk["usageMetadata"] = {"promptTokenCount": draw(st.integers(0, 9)), "candidatesTokenCount": 2}
    if draw(st.integers(0, 15)) == 0:
        chunk = {"error": {"code": 500, "message": draw(TEXT)}}
    return orjson.dumps(chunk).decode()


@st.composite
def streams(draw: Any) -> tuple[str, bytes, list[int]]:
    kind = draw(st.sampled_from(["openai", "anthropic", "gemini"]))
    eol = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    out = []
    for _ in range(draw(st.integers(1, 14))):
        if draw(st.integers(0, 9)) == 0:
            out.append(f": comment{eol}")
        if kind == "openai":
            out.append(f"data: {_openai_event(draw)}{eol}{eol}")
        elif kind == "anthropic":
            name, data = _anthropic_event(draw)
            out.append(f"event: {name}{eol}data: {data}{eol}{eol}")
        else:
            out.append(f"data: {_gemini_event(draw)}{eol}{eol}")
    cuts = draw(st.lists(st.integers(min_value=0, max_value=1 << 16), max_size=8))
    return kind, "".join(out).encode(), cuts


@settings(max_examples=400, deadline=None)
@given(case=streams())
def test_random_streams_decode_alike(case: tuple[str, bytes, list[int]]) -> None:
    kind, body, cuts = case
    wire = WIRES[kind]
    pieces = split(body, cuts)
    assert assemble(wire, pieces, native=True) == assemble(wire, pieces, native=False)
