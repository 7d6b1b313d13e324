"""Retry policy, circuit breaker and timeouts shared by the sync and async clients.

Time is injected (`clock` for the breaker, `sleep` for back-off) so tests need not wait.

The breaker counts every HTTP attempt: a connection error, a timeout or a 5xx answer is a failure;
any other answer (2xx, and 4xx including 429, which mean the gateway is up and talking) is a
success. After `failure_threshold` consecutive failures it opens: calls fail at once with
CircuitOpenError, nothing is sent. After `cooldown` seconds one call goes through as a probe
(half-open; other calls keep failing fast): its success closes the breaker, its failure re-opens it
for another cool-down.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from ensemble.client.errors import CircuitOpenError

BreakerState = Literal["closed", "open", "half_open"]


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds per attempt: a whole answer, a stream (longest silence between chunks), health."""

    generate: float = 60.0
    stream: float = 120.0
    health: float = 2.0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retries of retryable errors with exponential back-off: `base_delay * 2**n` (1 s, 2 s, 4 s…),
    capped at `max_delay`. A Retry-After from the gateway replaces the back-off for that wait; one
    longer than `max_retry_after` is not waited for (the error goes to the caller)."""

    max_retries: int = 2
    base_delay: float = 1.0
    max_delay: float = 4.0
    max_retry_after: float = 60.0
    retry_statuses: frozenset[int] = field(default_factory=lambda: frozenset({429, 502, 503, 504}))

    def backoff(self, retry: int) -> float:
        return float(min(self.base_delay * (2**retry), self.max_delay))

    def delay(self, retry: int, retry_after: float | None) -> float | None:
        """Seconds to wait before retry number `retry` (0-based), or None to give up."""
        if retry >= self.max_retries:
            return None
        if retry_after is not None:
            return retry_after if retry_after <= self.max_retry_after else None
        return self.backoff(retry)


DEFAULT_TIMEOUTS = Timeouts()
DEFAULT_RETRY = RetryPolicy()
NO_RETRIES = RetryPolicy(max_retries=0)


class CircuitBreaker:
    def __init__(
        self,
        failure_threshold: int = 5,
        cooldown: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        self.failure_threshold = failure_threshold
        self.cooldown = cooldown
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> BreakerState:
        with self._lock:
            if self._opened_at is None:
                return "closed"
            if self._probing or self._clock() - self._opened_at >= self.cooldown:
                return "half_open"
            return "open"

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def acquire(self) -> bool:
        """Before an attempt: raises CircuitOpenError when it may not be sent. Returns True when this
        attempt is the half-open probe (the caller must then report its outcome or `release` it)."""
        with self._lock:
            if self._opened_at is None:
                return False
            left = self._opened_at + self.cooldown - self._clock()
            if left > 0 or self._probing:
                raise CircuitOpenError(
                    f"circuit breaker open after {self._failures} consecutive failures; "
                    + (f"next probe in {left:.1f}s" if left > 0 else "a probe call is in flight"),
                    retryable=True,
                    retry_after=max(left, 0.0),
                )
            self._probing = True
            return True

    def success(self) -> None:
        with self._lock:
            self._failures = 0
            self._opened_at = None
            self._probing = False

    def failure(self) -> None:
        with self._lock:
            self._failures += 1
            if self._probing or self._failures >= self.failure_threshold:
                self._opened_at = self._clock()
            self._probing = False

    def release(self, probe: bool) -> None:
        """An attempt ended with neither outcome (e.g. cancelled): free the probe slot."""
        if probe:
            with self._lock:
                self._probing = False
