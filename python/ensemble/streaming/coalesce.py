"""Token coalescing: merge adjacent small deltas of the same kind into one frame.

`server.coalescence_window` > 0 batches what arrives within the window into one client frame (fewer
syscalls and SSE events for fast, tiny-token streams). With a window of 0 the pump never constructs
a Coalescer and renders each delta as it arrives, so it adds no latency and no work.
"""

from __future__ import annotations

from ensemble.types import StreamDelta, TextDelta, ThinkingDelta, ToolCallArgs


class Coalescer:
    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending: StreamDelta | None = None

    @property
    def pending(self) -> bool:
        return self._pending is not None

    def push(self, delta: StreamDelta) -> list[StreamDelta]:
        """Add a delta; return what must be emitted now (in order)."""
        merged = _merge(self._pending, delta) if self._pending is not None else None
        if merged is not None:
            self._pending = merged
            return []
        out = self.flush()
        if isinstance(delta, TextDelta | ThinkingDelta | ToolCallArgs):
            self._pending = delta
        else:  # tool-call starts, usage and finish are never delayed
            out.append(delta)
        return out

    def flush(self) -> list[StreamDelta]:
        if self._pending is None:
            return []
        out: list[StreamDelta] = [self._pending]
        self._pending = None
        return out


def _merge(a: StreamDelta, b: StreamDelta) -> StreamDelta | None:
    if isinstance(a, TextDelta) and isinstance(b, TextDelta) and a.index == b.index:
        return TextDelta(index=a.index, text=a.text + b.text)
    if (
        isinstance(a, ThinkingDelta)
        and isinstance(b, ThinkingDelta)
        and a.index == b.index
        and not a.signature
        and not b.signature
    ):
        return ThinkingDelta(index=a.index, thinking=a.thinking + b.thinking)
    if isinstance(a, ToolCallArgs) and isinstance(b, ToolCallArgs) and a.index == b.index:
        return ToolCallArgs(index=a.index, fragment=a.fragment + b.fragment)
    return None
