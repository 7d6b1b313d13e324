"""Cost of a call from the model's pricing: exact Decimal arithmetic, never floats.

Prices are USD per one million tokens. `Usage.input_tokens` is the whole prompt, so the tokens
billed at the plain input rate are those neither read from nor written to the prompt cache.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

from ensemble.config.schema import Pricing
from ensemble.types import Usage

_MILLION = Decimal(1_000_000)
_MICRO = Decimal("0.000001")


class Price:
    """A model's prices converted once to Decimal (config floats go through str to stay exact)."""

    __slots__ = ("cache_read", "cache_write", "input", "output", "output_rate", "worst_input")

    def __init__(self, pricing: Pricing) -> None:
        self.input = Decimal(str(pricing.input))
        self.output = Decimal(str(pricing.output))
        self.cache_read = Decimal(str(pricing.cache_read))
        self.cache_write = Decimal(str(pricing.cache_write))
        # For budget reservations (micro-dollars per token, as floats, read per request): the
        # dearest a prompt token can be billed (written to the cache, or plain input), and output.
        self.worst_input = float(max(self.input, self.cache_write))
        self.output_rate = float(self.output)

    def cost(self, usage: Usage, *, discount: Decimal | None = None) -> Decimal:
        uncached = max(usage.input_tokens - usage.cached_tokens - usage.cache_creation_tokens, 0)
        total = (
            uncached * self.input
            + usage.cached_tokens * self.cache_read
            + usage.cache_creation_tokens * self.cache_write
            + usage.output_tokens * self.output
        ) / _MILLION
        if discount is not None:
            total *= discount
        return total


def micro_dollars(cost: Decimal) -> int:
    """Whole micro-dollars, rounded half-to-even (the unit usage tables add up)."""
    return int(cost.quantize(_MICRO, rounding=ROUND_HALF_EVEN) * 1_000_000)


def format_cost(cost: Decimal) -> str:
    """A plain decimal string without exponent, e.g. '0.0000345'."""
    text = format(cost.normalize(), "f")
    return text if text != "-0" else "0"
