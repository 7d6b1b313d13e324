"""An HTTP provider's stream path in process: `Provider.stream` over an upstream body held in memory.

What one streamed answer costs between the upstream socket and the gateway's deltas: the stall
watchdog, the framing (SSE through the native parser), the wire format's decoder and the batching,
for an OpenAI chat.completion.chunk stream handed over in network-sized pieces. No socket, no
server: the upstream client is an in-memory stand-in, so the numbers are CPU time of Ensemble's
code only. Prints CPU µs per stream and per network chunk.

    python benches/pipeline/bench_stream.py [--streams 2000] [--events 200] [--piece 1400]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import AsyncIterator, Mapping

import orjson
import uvloop

from ensemble.config.schema import EndpointConfig, ModelConfig, Pricing, ProviderConfig
from ensemble.providers import build_provider
from ensemble.providers.base import CallOptions, Target
from ensemble.types import InferenceRequest, Message
from ensemble.usage.pricing import Price


def openai_stream(events: int) -> bytes:
    head = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o"}
    out = []
    for i in range(events):
        delta = {"role": "assistant", "content": ""} if i == 0 else {"content": f" word{i}"}
        chunk = {**head, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}]}
        out.append(b"data: " + orjson.dumps(chunk) + b"\n\n")
    last = {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    usage = {**head, "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": events}}
    out += [b"data: " + orjson.dumps(last) + b"\n\n", b"data: " + orjson.dumps(usage) + b"\n\n"]
    return b"".join(out) + b"data: [DONE]\n\n"


class Body:
    """The upstream response: status, headers, and the body in fixed-size pieces."""

    status = 200
    headers: Mapping[str, str] = {"content-type": "text/event-stream"}

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces

    async def read(self) -> bytes:
        return b"".join(self.pieces)

    async def chunks(self) -> AsyncIterator[bytes]:
        for piece in self.pieces:
            yield piece

    def close(self) -> None:
        pass

    def release(self) -> None:
        pass


class Upstream:
    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def post(self, url: str, headers: Mapping[str, str], body: bytes, **_: object) -> Body:
        return Body(self.pieces)


async def drive(provider: object, target: Target, streams: int) -> tuple[float, int]:
    request = InferenceRequest(model="gpt-4o", messages=[Message(role="user", content="hi")], stream=True)
    opts = CallOptions(stall_timeout=60.0, overall_timeout=600.0)
    deltas = 0
    start = time.process_time()  # CPU time: stays meaningful on a busy machine
    for _ in range(streams):
        async for batch in target.provider.stream(request, target, opts):
            deltas += len(batch)
    return time.process_time() - start, deltas


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", type=int, default=2000)
    ap.add_argument("--events", type=int, default=200)
    ap.add_argument("--piece", type=int, default=1400, help="bytes per network read")
    ap.add_argument("--rounds", type=int, default=5, help="best of this many runs")
    args = ap.parse_args()
    raw = openai_stream(args.events)
    pieces = [raw[i : i + args.piece] for i in range(0, len(raw), args.piece)]
    config = ProviderConfig(
        name="openai",
        type="openai",
        base_url="http://upstream",
        endpoints=[EndpointConfig(id="e", api_key="sk-bench")],
        models=[ModelConfig(name="gpt-4o", pricing=Pricing(input=1, output=2))],
    )
    provider = build_provider(config, Upstream(pieces))  # type: ignore[arg-type]
    assert provider is not None
    target = Target(provider, provider.endpoints[0], config.models[0], Price(config.models[0].pricing))
    loop = uvloop.new_event_loop()
    loop.run_until_complete(drive(provider, target, 50))  # warm up
    best = min(loop.run_until_complete(drive(provider, target, args.streams))[0] for _ in range(args.rounds))
    per_stream = best / args.streams * 1e6
    print(
        f"openai SSE, {args.events} events ({len(raw)} bytes) in {len(pieces)} reads of {args.piece} B: "
        f"{per_stream:8.1f} CPU µs/stream, {per_stream / len(pieces):6.2f} µs/read, "
        f"{per_stream / args.events * 1000:6.0f} ns/event (best of {args.rounds})"
    )


if __name__ == "__main__":
    main()
