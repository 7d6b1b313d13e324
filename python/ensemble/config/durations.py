"""Durations in config are strings such as `50ms`, `1s`, `2m`, `1h` (or compound: `1m30s`)."""

from __future__ import annotations

import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


class Duration(float):
    """Seconds, parsed from a duration string. A float subclass so arithmetic just works."""

    def __repr__(self) -> str:
        return f"Duration({float(self)!r})"


def parse_duration(value: object) -> Duration:
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as '500ms' or '30s', got {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"duration must not be negative, got {value!r}")
        return Duration(float(value))
    if not isinstance(value, str):
        raise ValueError(f"expected a duration such as '500ms' or '30s', got {type(value).__name__}")
    text = value.strip()
    if text in ("0", ""):
        if text == "":
            raise ValueError("expected a duration such as '500ms' or '30s', got an empty string")
        return Duration(0.0)
    pos, total = 0, 0.0
    for m in _PART.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or pos == 0:
        raise ValueError(f"invalid duration {value!r} (use e.g. 50ms, 1s, 2m, 1h)")
    return Duration(total)


def format_duration(seconds: float) -> str:
    if seconds == 0:
        return "0s"
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    for unit, size in (("h", 3600.0), ("m", 60.0)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"
