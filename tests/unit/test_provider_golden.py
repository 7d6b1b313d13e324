"""Golden tests per provider: recorded-shape answers (tests/fixtures/providers/<type>/<case>.*).

For each case, the JSON answer (`.response.json`) through the adapter's `parse`, and the same answer
streamed (`.stream.txt`, fed in small byte pieces through the native SSE parser, the adapter's
decoder and the Assembler) must both give the canonical blocks, usage, finish reason and cost in
`.expected.json` — so streamed and non-streamed calls end identical. Costs are exact Decimals.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest

from ensemble._native import SseParser
from ensemble.assembly import Assembler
from ensemble.config.schema import ModelConfig, Pricing, ProviderConfig
from ensemble.providers import registry
from ensemble.providers.base import Target, WireFormat
from ensemble.types import ProviderResult, ToolCallBlock
from ensemble.usage.pricing import Price, format_cost, micro_dollars

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "providers"


def _wire(provider_type: str) -> WireFormat:
    """The wire format a provider of this type speaks (with the type's default options)."""
    wire = registry.kind(provider_type).wire
    assert wire is not None
    return wire(ProviderConfig(name=provider_type, type=provider_type))


WIRES: dict[str, WireFormat] = {
    t: _wire(t) for t in ("openai", "xai", "openrouter", "anthropic", "gemini", "openai_compatible")
}
# OpenAI-type models with `api: responses` speak OpenAI's Responses API instead of chat completions.
WIRES["openai_responses"] = WIRES["openai"].for_target(
    Target(provider=None, endpoint=None, model=ModelConfig(name="gpt-5", api="responses"), price=None)  # type: ignore[arg-type]
)
CASES = sorted(
    (p.parent.name, p.name.removesuffix(".expected.json")) for p in FIXTURES.glob("*/*.expected.json")
)


def test_every_provider_type_has_golden_cases() -> None:
    assert {provider for provider, _ in CASES} == set(WIRES)


def streamed(wire: WireFormat, raw: bytes, piece: int = 7) -> ProviderResult:
    parser = SseParser()
    decoder = wire.decoder()
    assembler = Assembler()
    for i in range(0, len(raw), piece):
        for event, data, _id, _retry in parser.feed(raw[i : i + piece]):
            for delta in decoder.decode(event, data):
                assembler.feed(delta)
    parser.close()
    return assembler.result()


def canonical(result: ProviderResult, expected: dict[str, Any]) -> dict[str, Any]:
    """The result as plain data; tool-call ids the provider does not send (Gemini) are generated
    per call, so where the fixture says "*" only their presence is compared."""
    data: dict[str, Any] = msgspec.to_builtins(result)
    for got, want in zip(data["blocks"], expected["blocks"], strict=False):
        if got["type"] == "tool_call" and want["tool_call"]["id"] == "*":
            assert got["tool_call"]["id"].startswith("call_")
            got["tool_call"]["id"] = "*"
    return data


@pytest.mark.parametrize(("provider", "case"), CASES, ids=[f"{p}-{c}" for p, c in CASES])
def test_json_and_stream_give_the_expected_answer(provider: str, case: str) -> None:
    wire = WIRES[provider]
    expected = orjson.loads((FIXTURES / provider / f"{case}.expected.json").read_bytes())
    whole = wire.parse((FIXTURES / provider / f"{case}.response.json").read_bytes())
    stream_raw = (FIXTURES / provider / f"{case}.stream.txt").read_bytes()
    pieces = [streamed(wire, stream_raw, n) for n in (1, 7, len(stream_raw))]

    price = Price(Pricing(**expected["pricing"]))
    for result in (whole, *pieces):
        data = canonical(result, expected)
        assert data["blocks"] == expected["blocks"]
        assert data["usage"] == expected["usage"]
        assert data["finish_reason"] == expected["finish_reason"]
        if "upstream_model" in expected:
            assert result.upstream_model == expected["upstream_model"]
        for block in result.blocks:
            if isinstance(block, ToolCallBlock):  # raw and parsed arguments agree
                assert orjson.loads(block.tool_call.raw_arguments) == block.tool_call.arguments
        cost = result.cost if result.cost is not None else price.cost(result.usage)
        assert isinstance(cost, Decimal)
        assert cost == Decimal(expected["cost"])
        assert format_cost(cost) == expected["cost"]
        assert micro_dollars(cost) == expected["cost_micro_dollars"]
        if "price_list_cost" in expected:  # the provider's own charge wins over the price list
            assert price.cost(result.usage) == Decimal(expected["price_list_cost"])
    # Stream and JSON agree with each other too, ids included where the provider sends them.
    for result in pieces:
        assert canonical(result, expected) == canonical(whole, expected)


def test_cached_cost_arithmetic_is_exact() -> None:
    """Values whose float arithmetic is off (0.1 + 0.2) stay exact: 1M cached tokens at $0.30 plus
    3 uncached at $0.10 plus 7 written at $3.75 is exactly 0.3 + 0.0000003 + 0.00002625."""
    from ensemble.types import Usage

    price = Price(Pricing(input=0.1, output=0.2, cache_read=0.3, cache_write=3.75))
    usage = Usage(input_tokens=1_000_010, output_tokens=1, cached_tokens=1_000_000, cache_creation_tokens=7)
    cost = price.cost(usage)
    assert cost == Decimal("0.3") + Decimal("0.0000003") + Decimal("0.00002625") + Decimal("0.0000002")
    assert format_cost(cost) == "0.30002675"
    assert micro_dollars(cost) == 300027
