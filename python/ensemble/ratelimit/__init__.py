"""Rate-limit admission on the native counters (SPEC §6): per key first, reserve, reconcile."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from ensemble._native import RateLimiter
from ensemble.errors import InvalidRequest, RateLimited
from ensemble.ratelimit.lease import Leases
from ensemble.storage.keys import KeyRecord
from ensemble.types import RateLimitInfo


def now_ms() -> int:
    return time.monotonic_ns() // 1_000_000


def slot_count(window_ms: int, wanted: int = 60) -> int:
    """The native counters split the window into equal slots: the most slots (up to `wanted`)
    that divide the window exactly, so any configured window works (1m → 60 slots of 1s)."""
    return next(n for n in range(min(wanted, window_ms), 0, -1) if window_ms % n == 0)


@dataclass(slots=True)
class Reservation:
    scopes: list[str]
    tokens: int
    at_ms: int


class Admission:
    def __init__(
        self, *, window_s: float, default_rpm: int, default_tpm: int, clock: Callable[[], int] = now_ms
    ) -> None:
        self.clock = clock
        window_ms = max(int(window_s * 1000), 1)
        self.limiter = RateLimiter(window_ms, slot_count(window_ms))
        self.default_rpm = default_rpm
        self.default_tpm = default_tpm
        self._configured: dict[str, tuple[int, int]] = {}
        # Scale-out (Redis): quota leased from the shared window gates limited scopes; see lease.py.
        self.leases: Leases | None = None

    @staticmethod
    def key_scope(key_id: str) -> str:
        return f"key:{key_id}"

    def limits_for(self, key: KeyRecord) -> tuple[int, int]:
        return (key.rate_limit_rpm or self.default_rpm, key.rate_limit_tpm or self.default_tpm)

    def configure_key(self, key: KeyRecord) -> None:
        limits = self.limits_for(key)
        scope = self.key_scope(key.key_id)
        if self._configured.get(scope) != limits:
            self.limiter.configure(scope, *limits)
            self._configured[scope] = limits

    def admit_key(self, key: KeyRecord, tokens: int) -> Reservation:
        scope = self.key_scope(key.key_id)
        self.configure_key(key)
        _, tpm = self.limits_for(key)
        if tpm and tokens > tpm:
            # Waiting would never help: say what to change instead of answering 429 forever.
            raise InvalidRequest(
                f"max_tokens: this request needs an estimated {tokens} tokens (prompt + max_tokens), more than "
                f"this API key's limit of {tpm} tokens per window; lower max_tokens or shorten the prompt",
                param="max_tokens",
                code="exceeds_token_limit",
            )
        at = self.clock()
        lease_wait = self.leases.take(scope, tokens) if self.leases is not None else None
        if lease_wait is not None:
            ok, retry_after_ms = False, int(lease_wait * 1000)
        else:
            ok, retry_after_ms, _ = self.limiter.admit([scope], tokens, at)
            if not ok and self.leases is not None:
                self.leases.give_back(scope, 1, tokens)
        if not ok:
            rpm, tpm = self.limits_for(key)
            raise RateLimited(
                f"rate limit exceeded for this API key ({rpm or 'unlimited'} requests, "
                f"{tpm or 'unlimited'} tokens per window); retry after {retry_after_ms / 1000:.1f}s",
                retry_after_s=retry_after_ms / 1000,
                code="key_rate_limited",
            )
        return Reservation([scope], tokens, at)

    def reconcile(self, r: Reservation, actual_tokens: int) -> None:
        self.limiter.reconcile(r.scopes, r.tokens, actual_tokens, r.at_ms, self.clock())
        if self.leases is not None and actual_tokens != r.tokens:
            for scope in r.scopes:
                self.leases.give_back(scope, 0, r.tokens - actual_tokens)

    def info(self, key: KeyRecord) -> RateLimitInfo:
        limit_req, rem_req, limit_tok, rem_tok, _reset = self.limiter.snapshot(
            self.key_scope(key.key_id), self.clock()
        )
        return RateLimitInfo(
            limit_requests=limit_req,
            remaining_requests=rem_req,
            limit_tokens=limit_tok,
            remaining_tokens=rem_tok,
        )
