"""`usage.cost` in OpenAI streams that the gateway forwards as the provider sent them.

OpenAI-format clients get the answer's cost in the final chunk's `usage` (as OpenRouter reports it),
but on the same-format fast path that chunk is the provider's own bytes. The event that carries the
usage object (OpenAI sends it last, after the finish chunk) and everything after it is held back
until the stream has ended and been priced, then `"cost":…` is written into that usage object.

Every chunk of a stream with `include_usage` carries `"usage":null`, so every read is searched for
the first `"usage"\\s*:\\s*{`; the native `usage_event` does it (and finds the event's start) with
byte searches, a fraction of a regular expression's scan."""

from __future__ import annotations

import orjson

from ensemble._native import usage_event


class UsageCostSplice:
    __slots__ = ("_held",)

    def __init__(self) -> None:
        self._held: bytearray | None = None

    def pass_on(self, raw: bytes) -> bytes:
        """The part of one upstream read the client can have now; the rest is held."""
        if self._held is not None:
            self._held += raw
            return b""
        found = usage_event(raw)
        if found is None:
            return raw
        start = found[0]
        self._held = bytearray(raw[start:])
        return raw[:start]

    def finish(self, cost: str) -> bytes:
        """What was held, with the cost (USD, a decimal string) written into its usage object, as the
        rendering path writes it."""
        held = bytes(self._held or b"")
        self._held = None
        found = usage_event(held)
        if found is None:
            return held
        at = found[1]
        rest = held[at:].lstrip()
        comma = b"" if rest.startswith(b"}") else b","
        return held[:at] + b'"cost":' + orjson.dumps(float(cost)) + comma + held[at:]
