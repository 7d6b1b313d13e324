"""What a provider says about an endpoint's remaining capacity, from its response headers.

OpenAI / xAI / OpenRouter: `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` with resets as
Go-style durations (`1s`, `6m0s`, `20ms`). Anthropic: `anthropic-ratelimit-{requests,tokens,
input-tokens}-{limit,remaining,reset}` with resets as RFC 3339 timestamps. `retry-after` on a 429 or
529 sets the endpoint's cool-down (gateway) and, since both providers refill continuously, bounds an
exhausted view's reset: the window's full reset is not when the next request is accepted.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from datetime import datetime

# Without a reset time the provider's numbers are trusted this long.
DEFAULT_VIEW_MS = 60_000
# Never let a (possibly wrong) header shut an endpoint for longer than this.
MAX_VIEW_MS = 15 * 60_000

_UNITS = {"h": 3_600_000.0, "m": 60_000.0, "s": 1000.0, "ms": 1.0, "us": 0.001, "µs": 0.001, "ns": 1e-6}


class UpstreamView:
    """The provider's latest statement about one (endpoint, model); valid until `reset_at_ms`."""

    __slots__ = ("limit_requests", "limit_tokens", "remaining_requests", "remaining_tokens", "reset_at_ms")

    def __init__(self) -> None:
        self.limit_requests = 0
        self.limit_tokens = 0
        self.remaining_requests: int | None = None
        self.remaining_tokens: int | None = None
        self.reset_at_ms = 0  # monotonic ms; 0 = nothing known

    def consume(self, tokens: int) -> None:
        """Our own admission spends from what the provider said was left."""
        if self.remaining_requests is not None and self.remaining_requests > 0:
            self.remaining_requests -= 1
        if self.remaining_tokens is not None and self.remaining_tokens > 0:
            self.remaining_tokens = max(self.remaining_tokens - tokens, 0)

    def used_fraction(self) -> float:
        used = 0.0
        if self.limit_requests and self.remaining_requests is not None:
            used = 1.0 - self.remaining_requests / self.limit_requests
        if self.limit_tokens and self.remaining_tokens is not None:
            used = max(used, 1.0 - self.remaining_tokens / self.limit_tokens)
        return min(max(used, 0.0), 1.0)


@functools.lru_cache(maxsize=512)  # every response repeats a few values ("1m0s", "20ms")
def parse_duration_ms(value: str) -> float | None:
    """`1h2m3.5s`, `6m0s`, `20ms`, or plain seconds (`0.5`) → milliseconds."""
    value = value.strip()
    if not value:
        return None
    try:
        return float(value) * 1000.0
    except ValueError:
        pass
    total = 0.0
    i, n = 0, len(value)
    while i < n:
        j = i
        while j < n and (value[j].isdigit() or value[j] == "."):
            j += 1
        k = j
        while k < n and not (value[k].isdigit() or value[k] == "."):
            k += 1
        unit = _UNITS.get(value[j:k])
        if j == i or unit is None:
            return None
        try:
            total += float(value[i:j]) * unit
        except ValueError:
            return None
        i = k
    return total


def _reset_ms(value: str | None, now_ms: int, wall_s: float) -> int | None:
    if not value:
        return None
    if "T" in value:  # RFC 3339 timestamp (Anthropic)
        try:
            at = datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
        delay = (at - wall_s) * 1000.0
    else:
        parsed = parse_duration_ms(value)
        if parsed is None:
            return None
        delay = parsed
    return now_ms + int(min(max(delay, 0.0), MAX_VIEW_MS))


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    if value.isascii() and value.isdigit():  # what providers send: skip the float round trip
        return int(value)
    try:
        return max(int(float(value)), 0)
    except ValueError:
        return None


def parse_headers(headers: Mapping[str, str], view: UpstreamView, now_ms: int, wall_s: float) -> bool:
    """Update `view` from a response's headers; False (view untouched) when it has none."""
    get = headers.get
    rem_req = get("x-ratelimit-remaining-requests")
    if rem_req is not None or get("x-ratelimit-remaining-tokens") is not None:
        lim_req, lim_tok = get("x-ratelimit-limit-requests"), get("x-ratelimit-limit-tokens")
        rem_tok = get("x-ratelimit-remaining-tokens")
        reset_req, reset_tok = get("x-ratelimit-reset-requests"), get("x-ratelimit-reset-tokens")
    else:
        rem_req = get("anthropic-ratelimit-requests-remaining")
        rem_tok = get("anthropic-ratelimit-tokens-remaining") or get(
            "anthropic-ratelimit-input-tokens-remaining"
        )
        if rem_req is None and rem_tok is None:
            return False
        lim_req = get("anthropic-ratelimit-requests-limit")
        lim_tok = get("anthropic-ratelimit-tokens-limit") or get("anthropic-ratelimit-input-tokens-limit")
        reset_req = get("anthropic-ratelimit-requests-reset")
        reset_tok = get("anthropic-ratelimit-tokens-reset") or get("anthropic-ratelimit-input-tokens-reset")
    view.limit_requests = _int(lim_req) or 0
    view.limit_tokens = _int(lim_tok) or 0
    view.remaining_requests = _int(rem_req)
    view.remaining_tokens = _int(rem_tok)
    req_at = _reset_ms(reset_req, now_ms, wall_s)
    tok_at = _reset_ms(reset_tok, now_ms, wall_s)
    if view.remaining_requests == 0 and req_at is not None:
        view.reset_at_ms = req_at  # exhausted: the requests reset is what frees it
    elif view.remaining_tokens == 0 and tok_at is not None:
        view.reset_at_ms = tok_at
    else:
        known = [t for t in (req_at, tok_at) if t is not None]
        view.reset_at_ms = max(known) if known else now_ms + DEFAULT_VIEW_MS
    # OpenAI and Anthropic refill continuously: the reset headers say when the window is full
    # again, a 429's retry-after when the next request is accepted. The explicit one wins.
    retry_after = parse_duration_ms(get("retry-after") or "")
    if retry_after is not None and (view.remaining_requests == 0 or view.remaining_tokens == 0):
        view.reset_at_ms = min(view.reset_at_ms, now_ms + int(min(retry_after, MAX_VIEW_MS)))
    return True
