"""CPU cost of format translation, in-process (no network): µs per request for each
ingress format x provider type, for a JSON answer and for the same answer streamed.

One request = parse the client's body → build the provider's wire body → parse the provider's
answer (or decode + assemble its SSE stream, fed in one buffer) → render the client's answer (or
its stream frames). Recorded-shape answers come from tests/fixtures/providers.

    .venv/bin/python benches/translation.py [--rounds 2000]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import orjson

from ensemble._native import SseParser
from ensemble.api import anthropic as anthropic_api
from ensemble.api import gemini as gemini_api
from ensemble.api import openai as openai_api
from ensemble.assembly import Assembler
from ensemble.config.schema import EndpointConfig, ModelConfig, Pricing, ProviderConfig
from ensemble.providers.anthropic import AnthropicWire
from ensemble.providers.base import Endpoint, Target, WireFormat
from ensemble.providers.gemini import GeminiWire
from ensemble.providers.openai import OPENAI, OpenAIWire
from ensemble.types import InferenceResponse, Performance, ProviderResult, TextBlock, UsageOut
from ensemble.usage.pricing import Price, format_cost, micro_dollars

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "providers"
ANSWERS = {
    "openai": "openai/text_cached",
    "anthropic": "anthropic/thinking_tool_cached",
    "gemini": "gemini/thoughts_cached",
}
WIRES: dict[str, WireFormat] = {
    "openai": OpenAIWire(OPENAI),
    "anthropic": AnthropicWire(),
    "gemini": GeminiWire(),
}
MESSAGES = [{"role": "user", "content": "What is the capital of France? " * 8}]
BODIES = {
    "openai": orjson.dumps({"model": "m", "messages": MESSAGES, "max_tokens": 200}),
    "anthropic": orjson.dumps({"model": "m", "messages": MESSAGES, "max_tokens": 200, "system": "Be brief."}),
    "gemini": orjson.dumps({"contents": [{"role": "user", "parts": [{"text": MESSAGES[0]["content"]}]}]}),
}


def _target(kind: str) -> Target:
    cfg = ProviderConfig(
        name=kind,
        type=kind,
        base_url="http://upstream",
        endpoints=[EndpointConfig(id="e", api_key="k")],
        models=[ModelConfig(name="m", max_output_tokens=4096, pricing=Pricing(input=1, output=2))],
    )
    from ensemble.providers.mock import MockProvider  # any Provider will do as the target's owner

    return Target(
        MockProvider(cfg),
        Endpoint.from_config(cfg.endpoints[0], cfg),
        cfg.models[0],
        Price(cfg.models[0].pricing),
    )


def _response(result: ProviderResult, price: Price) -> InferenceResponse:
    u = result.usage
    cost = price.cost(u) if result.cost is None else result.cost
    return InferenceResponse(
        id="req_bench",
        model="m",
        provider="p",
        endpoint_id="e",
        blocks=result.blocks,
        content="".join(b.text for b in result.blocks if isinstance(b, TextBlock)),
        finish_reason=result.finish_reason,
        input_tokens=u.input_tokens,
        output_tokens=u.output_tokens,
        cached_prompt_tokens=u.cached_tokens,
        cache_creation_tokens=u.cache_creation_tokens,
        reasoning_tokens=u.reasoning_tokens,
        cost=format_cost(cost),
        cost_micro_dollars=micro_dollars(cost),
        usage=UsageOut(
            u.input_tokens, u.output_tokens, u.cached_tokens, u.cache_creation_tokens, u.reasoning_tokens
        ),
        processing_time_ms=0.0,
        performance=Performance(0.0, 0.0, 0.0),
    )


def _parse(fmt: str, body: bytes) -> Any:
    if fmt == "openai":
        return openai_api.parse_request(body)[0]
    if fmt == "anthropic":
        return anthropic_api.parse_request(body)
    return gemini_api.parse_request(body, "m", stream=False)


def _render_json(fmt: str, r: InferenceResponse) -> bytes:
    if fmt == "openai":
        return openai_api.render_response(r)
    if fmt == "anthropic":
        return anthropic_api.render_response(r)
    return gemini_api.render_response(r)


def _stream_writer(fmt: str) -> Any:
    if fmt == "openai":
        return openai_api.ChunkWriter("req_bench", "m", True)
    if fmt == "anthropic":
        return anthropic_api.MessageEvents("req_bench", "m")
    return gemini_api.ChunkStream("req_bench", "m", True)


def one(fmt: str, kind: str, stream: bool, target: Target, answer: bytes, price: Price) -> int:
    request = _parse(fmt, BODIES[fmt])
    wire = WIRES[kind]
    wire.build(request, target, stream)
    if not stream:
        return len(_render_json(fmt, _response(wire.parse(answer), price)))
    parser, decoder, assembler, writer = SseParser(), wire.decoder(), Assembler(), _stream_writer(fmt)
    out = len(writer.start())
    for event, data, _id, _retry in parser.feed(answer):
        for delta in decoder.decode(event, data):
            assembler.feed(delta)
            out += len(writer.render(delta) or b"")
    return out + len(writer.finish(_response(assembler.result(), price)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2000)
    args = ap.parse_args()
    price = Price(Pricing(input=1, output=2, cache_read=0.1, cache_write=1.25))
    print("| client format | provider | JSON µs/request | SSE µs/request |")
    print("|---|---|---|---|")
    for fmt in ("openai", "anthropic", "gemini"):
        for kind in ("openai", "anthropic", "gemini"):
            target = _target(kind)
            cells = []
            for stream in (False, True):
                suffix = ".stream.txt" if stream else ".response.json"
                answer = (FIXTURES / (ANSWERS[kind] + suffix)).read_bytes()
                for _ in range(200):  # warm-up
                    one(fmt, kind, stream, target, answer, price)
                t0 = time.perf_counter()
                for _ in range(args.rounds):
                    one(fmt, kind, stream, target, answer, price)
                cells.append(f"{(time.perf_counter() - t0) / args.rounds * 1e6:.1f}")
            print(f"| {fmt} | {kind} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
