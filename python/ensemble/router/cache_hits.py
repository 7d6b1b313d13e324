"""What the providers report about their prompt caches, per endpoint: the proof that affinity works.

Every finished request adds its prompt tokens and the cached prompt tokens its provider reported
(OpenAI `prompt_tokens_details.cached_tokens`, Anthropic `cache_read_input_tokens`, Gemini
`cachedContentTokenCount`, all normalised into `Usage`). `hit_rate` = cached / prompt tokens: high
when requests reach the endpoint that holds their prefix, near 0 when they are spread at random.
Only endpoint ids from the config are counted (this process's requests; `/admin/status`), so the
table never grows; Prometheus has the same numbers as counters (see telemetry.metrics).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ensemble.types import Usage

__all__ = ["CacheHits"]


class CacheHits:
    __slots__ = ("_by_endpoint",)

    def __init__(self, endpoint_ids: Iterable[str], previous: CacheHits | None = None) -> None:
        """`previous`: the counts before a config reload, kept for the endpoints still known."""
        # endpoint id -> [requests, prompt tokens, cached tokens, cache-write tokens]
        self._by_endpoint: dict[str, list[int]] = {eid: [0, 0, 0, 0] for eid in endpoint_ids}
        if previous is not None:
            for eid, row in previous._by_endpoint.items():
                if eid in self._by_endpoint:
                    self._by_endpoint[eid] = row

    def add(self, endpoint_id: str, usage: Usage) -> None:
        row = self._by_endpoint.get(endpoint_id)
        if row is None or not usage.input_tokens:
            return
        row[0] += 1
        row[1] += usage.input_tokens
        row[2] += usage.cached_tokens
        row[3] += usage.cache_creation_tokens

    def view(self, endpoint_id: str) -> dict[str, Any] | None:
        """`{requests, prompt_tokens, cached_tokens, cache_creation_tokens, hit_rate}` (hit_rate
        null before any request), or None for an endpoint the router does not know."""
        row = self._by_endpoint.get(endpoint_id)
        if row is None:
            return None
        requests, prompt, cached, written = row
        return {
            "requests": requests,
            "prompt_tokens": prompt,
            "cached_tokens": cached,
            "cache_creation_tokens": written,
            "hit_rate": round(cached / prompt, 4) if prompt else None,
        }
