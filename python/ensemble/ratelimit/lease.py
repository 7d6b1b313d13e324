"""Quota leased from Redis: how N instances share one limit without overshooting it (see docs/scale-out.md).

Counting locally and syncing every `sync_interval` lets N instances admit up to N x a limit between
syncs. Instead, while Redis is reachable, each instance admits a limited scope only from a *lease*:
a chunk of requests/tokens that one atomic Redis script granted it out of what is left in the
shared window (see `ratelimit/sync.py`). Redis charges the whole grant at once, so the grants of all
instances plus everyone's settled usage never exceed the limit. This module is the request-path
half: plain arithmetic on a dict, no I/O. When a lease runs low it asks the sync task (through
`wake`) for a refill; the refill is one Redis round trip on the background task, never on the
request path.

A scope without a valid lease (Redis unconfigured, unreachable, or the scope not leased yet) is
not gated here: the local sliding window decides, as on a single instance.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class Lease:
    gated_requests: bool  # the scope has a request limit (else requests are not drawn)
    gated_tokens: bool
    requests: int = 0  # remaining in this lease
    tokens: int = 0
    until: float = 0.0  # monotonic seconds; after this the lease is void (sync stopped renewing)
    retry_at: float = 0.0  # monotonic; when Redis said the shared window has room again (0: now)
    low_requests: int = 0  # below these, ask the sync task for a refill (without refusing anyone)
    low_tokens: int = 0


class Leases:
    def __init__(self, wake: Callable[[], None] = lambda: None, clock: Callable[[], float] = time.monotonic):
        self._leases: dict[str, Lease] = {}
        self.wake = wake
        self.clock = clock
        # scope -> the largest token amount a refused or nearly-starved request needed
        self.hungry: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._leases)

    def get(self, scope: str) -> Lease | None:
        return self._leases.get(scope)

    def set(self, scope: str, lease: Lease) -> None:
        self._leases[scope] = lease

    def drop(self, scope: str) -> None:
        self._leases.pop(scope, None)

    def clear(self) -> None:
        """Redis is gone: every scope falls back to local limits at once."""
        self._leases.clear()
        self.hungry.clear()

    def remaining(self, scope: str) -> tuple[int, int]:
        lease = self._leases.get(scope)
        return (lease.requests, lease.tokens) if lease is not None else (0, 0)

    def take(self, scope: str, tokens: int) -> float | None:
        """Draw one request and `tokens` from the scope's lease.

        Returns None when admitted (or when the scope is not leased), else the seconds to wait."""
        lease = self._leases.get(scope)
        if lease is None:
            return None
        now = self.clock()
        if now >= lease.until:
            del self._leases[scope]
            return None
        if (lease.gated_requests and lease.requests < 1) or (lease.gated_tokens and lease.tokens < tokens):
            if lease.retry_at > now:
                # Redis said the shared window is full until then: asking again cannot help.
                return lease.retry_at - now
            # Room in the shared window but not in this lease: a refill is one round trip away.
            self._starve(scope, tokens)
            return 0.05
        lease.requests -= 1
        lease.tokens -= tokens
        low = (lease.gated_requests and lease.requests < max(1, lease.low_requests)) or (
            lease.gated_tokens and lease.tokens < max(tokens, lease.low_tokens)
        )
        if low and scope not in self.hungry:
            self._starve(scope, tokens)  # refill before the next request finds it empty
        return None

    def give_back(self, scope: str, requests: int, tokens: int) -> None:
        """An admission undone, or a reservation that turned out larger than the real usage."""
        lease = self._leases.get(scope)
        if lease is not None:
            lease.requests += requests
            lease.tokens += tokens

    def _starve(self, scope: str, tokens: int) -> None:
        if tokens > self.hungry.get(scope, -1):
            self.hungry[scope] = tokens
        self.wake()
