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


class UsageCostSplice:
    __slots__ = ("_held",)

    def __init__(self) -> None:
        self._held: bytearray | None = None

    def pass_on(self, raw: bytes) -> bytes:
        """The part of one upstream read the client can have now; the rest is held."""
        if self._held is not None:
            self._held += raw
            return b""
        found = _USAGE_OBJECT.search(raw)
        if found is None:
            return raw
        start = _event_start(raw, found.start())
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


def _event_start(raw: bytes, at: int) -> int:
    """Where the event holding byte `at` begins (just after the previous blank line)."""
    cut = max(raw.rfind(b"\n\n", 0, at), raw.rfind(b"\r\n\r\n", 0, at), raw.rfind(b"\r\r", 0, at))
    if cut < 0:
        return 0
    return cut + (4 if raw.startswith(b"\r\n\r\n", cut) else 2)
