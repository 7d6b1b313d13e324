"""`usage.cost` in OpenAI streams that the gateway forwards as the provider sent them.

OpenAI-format clients get the answer's cost in the final chunk's `usage` (as OpenRouter reports it),
but on the same-format fast path that chunk is the provider's own bytes. The event that carries the
usage object (OpenAI sends it last, after the finish chunk) and everything after it is held back
until the stream has ended and been priced, then `"cost":…` is written into that usage object."""

from __future__ import annotations

import re

import orjson

# Every chunk of a stream with `include_usage` carries `"usage":null`; only the last has an object.
_USAGE_OBJECT = re.compile(rb'"usage"\s*:\s*\{')
# What OpenAI sends (compact JSON): found with plain byte searches, which cost a fraction of the
# regular expression's scan of every read.
_USAGE_KEY = b'"usage"'
_COMPACT_OBJECT = b'"usage":{'
_COMPACT_NULL = b'"usage":null'


class UsageCostSplice:
    __slots__ = ("_held",)

    def __init__(self) -> None:
        self._held: bytearray | None = None

    def pass_on(self, raw: bytes) -> bytes:
        """The part of one upstream read the client can have now; the rest is held."""
        if self._held is not None:
            self._held += raw
            return b""
        at = _first_usage_object(raw)
        if at < 0:
            return raw
        start = _event_start(raw, at)
        self._held = bytearray(raw[start:])
        return raw[:start]

    def finish(self, cost: str) -> bytes:
        """What was held, with the cost (USD, a decimal string) written into its usage object, as the
        rendering path writes it."""
        held = bytes(self._held or b"")
        self._held = None
        found = _USAGE_OBJECT.search(held)
        if found is None:
            return held
        at = found.end()
        rest = held[at:].lstrip()
        comma = b"" if rest.startswith(b"}") else b","
        return held[:at] + b'"cost":' + orjson.dumps(float(cost)) + comma + held[at:]


def _first_usage_object(raw: bytes) -> int:
    """Where the first `"usage": {` of `raw` starts, or -1. When every `"usage"` before the first
    compact object (or in the whole read) is a compact null, that object is the first; anything else
    (whitespace around the colon) takes the regular expression."""
    at = raw.find(_COMPACT_OBJECT)
    before = raw if at < 0 else raw[:at]
    if before.count(_USAGE_KEY) == before.count(_COMPACT_NULL):
        return at
    found = _USAGE_OBJECT.search(raw)
    return -1 if found is None else found.start()


def _event_start(raw: bytes, at: int) -> int:
    """Where the event holding byte `at` begins (just after the previous blank line)."""
    lf = raw.rfind(b"\n\n", 0, at)
    # A CRLF or CR blank line can only be nearer than the last LF one: search just that stretch.
    since = max(lf, 0)
    cut = max(lf, raw.rfind(b"\r\n\r\n", since, at), raw.rfind(b"\r\r", since, at))
    if cut < 0:
        return 0
    return cut + (4 if raw.startswith(b"\r\n\r\n", cut) else 2)
