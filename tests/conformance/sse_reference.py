"""A small, literal pure-Python reference for WHATWG event-stream interpretation.

It works on the whole byte stream at once (no chunking), straight from the spec text:
https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation

Conventions shared with ``ensemble._native.SseParser`` where the spec leaves room:
each event carries the ``retry`` value given inside its own block (``None`` if none), and a
``retry`` value too large for an unsigned 64-bit integer is ignored.
"""

from __future__ import annotations

import re

Event = tuple[str, str, str, int | None]

_LINE = re.compile(r"([^\r\n]*)(\r\n|\r|\n)")
_U64_MAX = 2**64 - 1


def _is_u64_digits(value: str) -> bool:
    return value != "" and all(c in "0123456789" for c in value) and int(value) <= _U64_MAX


def parse(stream: bytes) -> list[Event]:
    """All events dispatched by ``stream``; an unterminated final line/event is discarded."""
    text = stream.decode("utf-8", errors="replace")
    if text.startswith("\ufeff"):
        text = text[1:]
    events: list[Event] = []
    data = ""
    event_type = ""
    last_event_id = ""
    retry: int | None = None
    # Only terminated lines are processed; whatever follows the last terminator is discarded.
    for match in _LINE.finditer(text):
        line = match.group(1)
        if line == "":
            if data == "":
                event_type = ""
                retry = None
                continue
            if data.endswith("\n"):
                data = data[:-1]
            events.append((event_type or "message", data, last_event_id, retry))
            data = ""
            event_type = ""
            retry = None
            continue
        if line.startswith(":"):
            continue
        if ":" in line:
            field, value = line.split(":", 1)
            if value.startswith(" "):
                value = value[1:]
        else:
            field, value = line, ""
        if field == "event":
            event_type = value
        elif field == "data":
            data += value + "\n"
        elif field == "id":
            if "\0" not in value:
                last_event_id = value
        elif field == "retry" and _is_u64_digits(value):
            retry = int(value)
    return events
