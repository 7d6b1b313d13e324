"""What a prompt-cache hit is worth on one model (docs/routing.md, "What a cache hit is worth").

The affinity thresholds compare a *fraction*: the share of the request's input cost that reading
the cached prefix saves, against sending the request where nothing is cached. Going elsewhere costs
the cached tokens at the input price, or at the cache-write price where the provider charges a
premium for writing them again (Anthropic: 1.25x input); the hit costs them at the cache-read price:

    value = cached * (miss - cache_read) / (cached * miss + (prompt - cached) * input)
    miss  = max(input, cache_write)

Without a write premium this is `cached * (input - cache_read) / (prompt * input)`, so it is 0..1
whatever the model costs: a 6,000-token system prompt is worth the same to a $0.15 model as to a
$15 one when both give the same discount. The dollar figure (`usd`) is kept for the request log
and the metrics.
"""

from __future__ import annotations

from ensemble.config.schema import Pricing
from ensemble.router.affinity import MIN_CACHEABLE_TOKENS

__all__ = ["CacheValue"]

# A model configured without prices still has a provider cache worth keeping: assume the smallest
# discount any provider gives (OpenAI's 50%) so sessions on it stick like on a priced model.
_UNPRICED = Pricing(input=1.0, cache_read=0.5)


class CacheValue:
    """The value of a cache hit on one model's prices, computed for every affinity decision."""

    __slots__ = ("_input", "_miss", "_saving", "usd_per_token")

    def __init__(self, pricing: Pricing) -> None:
        # USD saved per cached prompt token (0 for an unpriced model: nothing is billed).
        miss = max(pricing.input, pricing.cache_write)
        self.usd_per_token = max(miss - pricing.cache_read, 0.0) / 1_000_000
        p = pricing if pricing.input > 0 else _UNPRICED
        self._input = p.input
        self._miss = max(p.input, p.cache_write)
        self._saving = max(self._miss - p.cache_read, 0.0)

    def fraction(self, cached: int, prompt: int) -> float:
        """Share of the input cost saved by reading `cached` of `prompt` tokens from the cache (0..1)."""
        if cached < MIN_CACHEABLE_TOKENS:
            return 0.0
        cost = cached * self._miss + max(prompt - cached, 0) * self._input
        return cached * self._saving / cost if cost > 0 else 0.0

    def usd(self, cached: int) -> float:
        """Estimated dollars the hit saves (for logs and metrics, not for decisions)."""
        return cached * self.usd_per_token if cached >= MIN_CACHEABLE_TOKENS else 0.0
