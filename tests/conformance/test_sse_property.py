"""The Rust SSE parser agrees with the pure-Python reference on random streams and chunkings."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ensemble._native import SseError, SseParser

from .sse_reference import parse as reference_parse

EOLS = [b"\n", b"\r", b"\r\n"]
FIELDS = [b"data", b"event", b"id", b"retry", b"", b"Data", b"foo", b"data ", b"\xef\xbb\xbfdata"]

_text = st.text(
    alphabet=st.sampled_from(
        ["a", "b", " ", ":", "0", "7", "9", "\0", "\t", "é", "€", "😀", "世", "\ufeff", "\ufffd"]
    ),
    max_size=8,
).map(lambda s: s.encode())
_digits = st.text(alphabet="0123456789", min_size=1, max_size=25).map(str.encode)
_junk = st.binary(max_size=4)  # invalid UTF-8, stray CR/LF, truncated sequences

_value = st.one_of(_text, _digits, _junk, st.just(b""))
_field_line = st.tuples(st.sampled_from(FIELDS), st.sampled_from([b":", b": ", b"", b"::"]), _value).map(
    lambda t: t[0] + t[1] + t[2] if t[1] else t[0]
)
_comment = _text.map(lambda v: b":" + v)
_line = st.tuples(st.one_of(_field_line, _field_line, _comment, st.just(b"")), st.sampled_from(EOLS)).map(
    lambda t: t[0] + t[1]
)

_stream = st.tuples(
    st.sampled_from([b"", b"", b"\xef\xbb\xbf", b"\xef\xbb", b"\xef\xbb\xbf\xef\xbb\xbf"]),
    st.lists(_line, max_size=30),
    st.one_of(st.just(b""), _field_line),  # maybe an unterminated tail
).map(lambda t: t[0] + b"".join(t[1]) + t[2])


def _chunk(stream: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(stream) + 1) for c in cuts})
    out, last = [], 0
    for p in points:
        out.append(stream[last:p])
        last = p
    out.append(stream[last:])
    return out


def _run(chunks: list[bytes]) -> list[tuple[str, str, str, int | None]]:
    parser = SseParser()
    events: list[tuple[str, str, str, int | None]] = []
    for c in chunks:
        events.extend(parser.feed(c))
    parser.close()
    return events


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream=_stream, cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=12))
def test_rust_matches_reference(stream: bytes, cuts: list[int]) -> None:
    expected = reference_parse(stream)
    assert _run([stream]) == expected
    assert _run(_chunk(stream, cuts)) == expected


@settings(max_examples=150, deadline=None)
@given(stream=_stream)
def test_byte_by_byte(stream: bytes) -> None:
    assert _run([stream[i : i + 1] for i in range(len(stream))]) == reference_parse(stream)


@given(stream=st.binary(max_size=200), cuts=st.lists(st.integers(min_value=0, max_value=300), max_size=8))
def test_arbitrary_bytes(stream: bytes, cuts: list[int]) -> None:
    assert _run(_chunk(stream, cuts)) == reference_parse(stream)


def test_reference_sanity() -> None:
    assert reference_parse(b"\xef\xbb\xbfdata: a\r\ndata: b\r\rid: 1\nretry: 5\ndata\n\n") == [
        ("message", "a\nb", "", None),
        ("message", "", "1", 5),
    ]


def test_openai_like_stream_split_everywhere() -> None:
    body = (
        b"".join(
            b'data: {"object":"chat.completion.chunk","choices":[{"delta":{"content":"t%d \xc3\xa9"}}]}\n\n'
            % i
            for i in range(3)
        )
        + b"data: [DONE]\n\n"
    )
    expected = reference_parse(body)
    assert len(expected) == 4
    for k in range(len(body) + 1):
        assert _run([body[:k], body[k:]]) == expected


def test_line_bound_raises_sse_error() -> None:
    parser = SseParser(max_line_bytes=16)
    assert parser.feed(b"data: 0123456789\n\n") == [("message", "0123456789", "", None)]
    with pytest.raises(SseError, match="max_line_bytes"):
        parser.feed(b"data: 01234567890\n")
    with pytest.raises(ValueError):  # terminal, and SseError is a ValueError
        parser.feed(b"\n")
    parser.close()
    assert parser.feed(b"data: x\n\n") == [("message", "x", "", None)]


def test_event_bound_raises_sse_error() -> None:
    parser = SseParser(max_event_bytes=10)
    with pytest.raises(SseError, match="max_event_bytes"):
        parser.feed(b"data: 12345\ndata: 12345\n\n")


def test_properties() -> None:
    parser = SseParser()
    parser.feed(b"id: 7\nretry: 300\ndata: x\n\n")
    assert parser.last_event_id == "7"
    assert parser.reconnection_time == 300
