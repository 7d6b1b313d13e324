"""The passed-through stream's own parts, CPU µs per 20-chunk OpenAI stream, in tight loops.

What `make bench`'s SSE stream costs in the parts of the same-format fast path that run once per
stream or per network read: the native scanner's `feed`, the usage-cost splice, the chat-completions
format object, a `RawBatch`, the stall watchdog. On a busy machine whole-pipeline runs swing more
than these parts weigh; run this under two builds, interleaved, to compare them:

    python benches/pipeline/bench_stream_parts.py            # one JSON line of µs per part
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson
import uvloop

from ensemble._native import StreamScanner
from ensemble.providers.base import RawBatch
from ensemble.server.inference import OpenAIChunks
from ensemble.streaming.cost_splice import UsageCostSplice
from ensemble.streaming.watchdog import StallWatchdog

HEAD = {
    "id": "chatcmpl-1",
    "object": "chat.completion.chunk",
    "created": 1,
    "model": "gpt-4o-mini",
    "system_fingerprint": None,
}


def _event(fields: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps({**HEAD, **fields}) + b"\n\n"


def _choice(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        "usage": None,
    }


STREAM = (
    _event(_choice({"role": "assistant", "content": ""}))
    + b"".join(_event(_choice({"content": f"tok{i} "})) for i in range(20))
    + _event(_choice({}, "stop"))
    + _event({"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 20, "total_tokens": 32}})
    + b"data: [DONE]\n\n"
)


def per_call(f: Callable[[], object], n: int = 20000) -> float:
    start = time.process_time()
    for _ in range(n):
        f()
    return (time.process_time() - start) / n * 1e6


def scan() -> None:
    StreamScanner("openai", True).feed(STREAM)


def splice() -> None:
    s = UsageCostSplice()
    s.pass_on(STREAM)
    s.finish("0.0000138")


# Builds before `RawBatch.of` took (deltas, raw) in the constructor: so this runs against them too.
_raw_batch: Callable[[list[Any], bytes], RawBatch] = getattr(RawBatch, "of", RawBatch)


async def watchdog(n: int = 20000) -> float:
    start = time.process_time()
    for _ in range(n):
        w = StallWatchdog(60, 600)
        w.arm()
        for _ in range(3):  # the headers, the body, the end
            w.begin_read()
            w.end_read()
        w.disarm()
    return (time.process_time() - start) / n * 1e6


def main() -> None:
    out = {
        "scanner feed (24 events)": per_call(scan),
        "usage-cost splice": per_call(splice),
        "OpenAIChunks (passed through)": per_call(lambda: OpenAIChunks("req_1", "gpt-4o-mini", True)),
        "RawBatch": per_call(lambda: _raw_batch([], b"x"), 100000),
        "watchdog (3 reads)": uvloop.run(watchdog()),
    }
    print(orjson.dumps(out).decode())


if __name__ == "__main__":
    main()
