"""SSE parse throughput: ensemble._native.SseParser vs a straightforward pure-Python parser.

Realistic OpenAI chat.completion.chunk and Anthropic messages streams, fed in 1-4 KiB chunks.
Run: python benches/native/bench_sse.py   (prints a table; not a timed test)
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from typing import Protocol

from ensemble._native import SseParser, build_profile

Event = tuple[str, str, str, int | None]

WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "a",
    "lazy",
    "dog",
    "—",
    "naïve",
    "café",
    "東京",
    "😀",
    "tokens",
    "stream",
    "fast",
]


def openai_stream(n: int) -> bytes:
    out = []
    base = {
        "id": "chatcmpl-AbCdEf0123456789",
        "object": "chat.completion.chunk",
        "created": 1732400000,
        "model": "gpt-4o-mini-2024-07-18",
        "system_fingerprint": "fp_0ba0d124f1",
    }
    rnd = random.Random(1)
    for i in range(n):
        delta = {"role": "assistant", "content": ""} if i == 0 else {"content": " " + rnd.choice(WORDS)}
        chunk = {
            **base,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}],
        }
        out.append(b"data: " + json.dumps(chunk, ensure_ascii=False).encode() + b"\n\n")
    usage = {
        **base,
        "choices": [],
        "usage": {"prompt_tokens": 12, "completion_tokens": n, "total_tokens": n + 12},
    }
    out.append(b"data: " + json.dumps(usage).encode() + b"\n\n")
    out.append(b"data: [DONE]\n\n")
    return b"".join(out)


def anthropic_stream(n: int) -> bytes:
    rnd = random.Random(2)

    def ev(name: str, payload: dict[str, object]) -> bytes:
        return (
            b"event: "
            + name.encode()
            + b"\ndata: "
            + json.dumps(payload, ensure_ascii=False).encode()
            + b"\n\n"
        )

    out = [
        ev(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
                    "type": "message",
                    "role": "assistant",
                    "content": [],
                    "model": "claude-sonnet-4-5",
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": 25, "output_tokens": 1},
                },
            },
        ),
        ev(
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        ),
        ev("ping", {"type": "ping"}),
    ]
    for _ in range(n):
        out.append(
            ev(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": " " + rnd.choice(WORDS)},
                },
            )
        )
    out.append(ev("content_block_stop", {"type": "content_block_stop", "index": 0}))
    out.append(
        ev(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": n},
            },
        )
    )
    out.append(ev("message_stop", {"type": "message_stop"}))
    return b"".join(out)


def chunked(stream: bytes, seed: int) -> list[bytes]:
    rnd = random.Random(seed)
    out, i = [], 0
    while i < len(stream):
        k = rnd.randint(1024, 4096)
        out.append(stream[i : i + k])
        i += k
    return out


class PyParser:
    """A straightforward incremental pure-Python WHATWG parser (what one would write without Rust)."""

    def __init__(self) -> None:
        self.buf = b""
        self.skip_lf = False
        self.started = False
        self.data: list[str] = []
        self.event_type = ""
        self.last_id = ""
        self.retry: int | None = None

    def feed(self, chunk: bytes) -> list[Event]:
        if self.skip_lf and chunk[:1] == b"\n":
            chunk = chunk[1:]
        self.skip_lf = False
        buf = self.buf + chunk
        if not self.started and len(buf) >= 3:
            self.started = True
            if buf.startswith(b"\xef\xbb\xbf"):
                buf = buf[3:]
        lines = buf.splitlines(keepends=True)
        if lines and not lines[-1].endswith((b"\n", b"\r")):
            self.buf = lines.pop()
        else:
            self.buf = b""
        if lines and lines[-1].endswith(b"\r"):
            self.skip_lf = True
        events: list[Event] = []
        for raw in lines:
            line = raw.rstrip(b"\r\n").decode("utf-8", "replace")
            if not line:
                if self.data:
                    events.append(
                        (self.event_type or "message", "\n".join(self.data), self.last_id, self.retry)
                    )
                self.data, self.event_type, self.retry = [], "", None
                continue
            if line[0] == ":":
                continue
            field, sep, value = line.partition(":")
            if sep and value[:1] == " ":
                value = value[1:]
            if field == "data":
                self.data.append(value)
            elif field == "event":
                self.event_type = value
            elif field == "id":
                if "\0" not in value:
                    self.last_id = value
            elif field == "retry" and value.isascii() and value.isdigit():
                self.retry = int(value)
        return events


class Parser(Protocol):
    def feed(self, chunk: bytes) -> list[Event]: ...


def measure(make: Callable[[], Parser], chunks: list[bytes], repeat: int) -> tuple[float, int]:
    best, n_events = float("inf"), 0
    for _ in range(repeat):
        parser = make()
        feed = parser.feed
        t0 = time.perf_counter()
        n = 0
        for c in chunks:
            n += len(feed(c))
        best = min(best, time.perf_counter() - t0)
        n_events = n
    return best, n_events


def main() -> None:
    streams = {
        "openai chat.completion.chunk": openai_stream(20_000),
        "anthropic messages": anthropic_stream(20_000),
    }
    print(f"ensemble._native build: {build_profile}; chunks of 1-4 KiB; best of 5")
    print(f"{'stream':30} {'parser':8} {'MB/s':>9} {'events/s':>12} {'events':>8} {'speed-up':>9}")
    for name, stream in streams.items():
        chunks = chunked(stream, 7)
        assert PyParser().feed(stream) == SseParser().feed(stream)
        results: dict[str, float] = {}
        makers: tuple[tuple[str, Callable[[], Parser]], ...] = (("python", PyParser), ("rust", SseParser))
        for label, make in makers:
            secs, n = measure(make, chunks, 5)
            results[label] = secs
            speed = f"{results['python'] / secs:8.1f}x" if label == "rust" else ""
            print(f"{name:30} {label:8} {len(stream) / secs / 1e6:9.1f} {n / secs:12,.0f} {n:8} {speed:>9}")


if __name__ == "__main__":
    main()
