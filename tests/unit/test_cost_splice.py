"""The cost written into a forwarded OpenAI stream's usage object, whatever the reads' boundaries."""

import random
import re

import orjson

from ensemble._native import usage_event
from ensemble.streaming.cost_splice import UsageCostSplice

STREAM = (
    b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"Hi"}}],"usage":null}\n\n'
    b'data: {"id":"c1","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}\n\n'
    b'data: {"id":"c1","choices":[],"usage": {"prompt_tokens":3,"completion_tokens":1}}\n\n'
    b"data: [DONE]\n\n"
)


def _through(reads: list[bytes], cost: str) -> bytes:
    splice = UsageCostSplice()
    return b"".join(splice.pass_on(r) for r in reads) + splice.finish(cost)


def test_any_grouping_of_whole_events_gives_the_stream_with_the_cost_in_the_usage_object() -> None:
    # The fast path forwards whole events only, so reads split between events, never inside one.
    want = STREAM.replace(b'"usage": {', b'"usage": {"cost":0.00125,')
    events = [e + b"\n\n" for e in STREAM.split(b"\n\n") if e]
    for cut in range(len(events) + 1):
        reads = [b"".join(events[:cut]), b"".join(events[cut:])]
        assert _through(reads, "0.00125") == want, cut
    assert _through(events, "0.00125") == want
    usage = orjson.loads(want.split(b"\n\n")[2].removeprefix(b"data: "))["usage"]
    assert usage["cost"] == 0.00125 and usage["prompt_tokens"] == 3


def test_nothing_is_held_back_before_the_usage_event() -> None:
    splice = UsageCostSplice()
    first = STREAM.split(b"\n\n")[0] + b"\n\n"
    assert splice.pass_on(first) == first


def test_a_stream_without_usage_passes_unchanged() -> None:
    plain = b'data: {"choices":[]}\n\ndata: [DONE]\n\n'
    assert _through([plain], "0.1") == plain


def test_the_first_usage_object_is_found_whatever_its_spacing() -> None:
    # A spaced usage object before a compact one: the spaced one is the first, and the cost goes there.
    spaced = b'data: {"choices":[],"usage" : {"prompt_tokens":1}}\n\n'
    compact = b'data: {"choices":[],"usage":{"prompt_tokens":2}}\n\n'
    head = b'data: {"choices":[{"index":0,"delta":{"content":"Hi"}}],"usage":null}\n\n'
    splice = UsageCostSplice()
    assert splice.pass_on(head + spaced + compact) == head
    assert splice.finish("0.5") == spaced.replace(b'"usage" : {', b'"usage" : {"cost":0.5,') + compact


def test_crlf_events_are_held_from_the_usage_event_start() -> None:
    stream = STREAM.replace(b"\n", b"\r\n")
    splice = UsageCostSplice()
    events = stream.split(b"\r\n\r\n")
    assert splice.pass_on(stream) == b"\r\n\r\n".join(events[:2]) + b"\r\n\r\n"
    assert splice.finish("0.25").startswith(b'data: {"id":"c1","choices":[],"usage": {"cost":0.25,')


def _reference_usage_event(raw: bytes) -> tuple[int, int] | None:
    """The regular expression and reverse searches the native `usage_event` replaces."""
    found = re.search(rb'"usage"\s*:\s*\{', raw)
    if found is None:
        return None
    at = found.start()
    cut = max(raw.rfind(b"\n\n", 0, at), raw.rfind(b"\r\n\r\n", 0, at), raw.rfind(b"\r\r", 0, at))
    start = 0 if cut < 0 else cut + (4 if raw.startswith(b"\r\n\r\n", cut) else 2)
    return start, found.end()


def test_the_native_search_agrees_with_the_regular_expression() -> None:
    pieces = [
        b'"usage"',
        b":",
        b" ",
        b"\t",
        b"{",
        b"null",
        b"\n",
        b"\r",
        b"\n\n",
        b"\r\n\r\n",
        b"\r\r",
        b"x",
        b'"',
    ]
    rng = random.Random(7)
    for _ in range(20000):
        raw = b"".join(rng.choice(pieces) for _ in range(rng.randrange(0, 24)))
        assert usage_event(raw) == _reference_usage_event(raw), raw
