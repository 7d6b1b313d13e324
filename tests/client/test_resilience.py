"""The client's resilience parts on their own: breaker states with an injected clock, back-off,
Retry-After parsing and SSE line handling (no server needed)."""

from __future__ import annotations

import email.utils

import pytest

from client.stack import FakeClock
from ensemble.client import CircuitBreaker, CircuitOpenError, RetryPolicy
from ensemble.client._base import SseParser
from ensemble.client.errors import APIConnectionError, parse_retry_after


def test_half_open_lets_exactly_one_probe_through() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=2, cooldown=10, clock=clock)
    breaker.failure()
    assert breaker.state == "closed"
    breaker.failure()
    assert breaker.state == "open"
    with pytest.raises(CircuitOpenError):
        breaker.acquire()
    clock.now += 10
    assert breaker.acquire() is True  # the probe
    with pytest.raises(CircuitOpenError, match="probe call is in flight"):
        breaker.acquire()  # a concurrent call while the probe runs
    breaker.release(True)  # the probe was cancelled: the next call may probe
    assert breaker.acquire() is True
    breaker.success()
    assert breaker.state == "closed" and breaker.acquire() is False


def test_a_success_resets_the_count() -> None:
    breaker = CircuitBreaker(failure_threshold=3, clock=FakeClock())
    for _ in range(2):
        breaker.failure()
    breaker.success()
    for _ in range(2):
        breaker.failure()
    assert breaker.state == "closed" and breaker.consecutive_failures == 2


def test_backoff_and_retry_after() -> None:
    policy = RetryPolicy()
    assert [policy.backoff(n) for n in range(4)] == [1.0, 2.0, 4.0, 4.0]
    error = APIConnectionError("x", retryable=True)
    assert [policy.delay(n, None) for n in range(3)] == [1.0, 2.0, None]
    assert policy.delay(0, 7.0) == 7.0 and policy.delay(0, 61.0) is None
    assert error.retryable


def test_retry_after_as_seconds_or_http_date() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    date = email.utils.formatdate(1_000_030, usegmt=True)
    assert parse_retry_after(date, now=1_000_000) == 30.0


def test_sse_parser_joins_data_lines_and_skips_comments() -> None:
    parser = SseParser()
    lines = [": keepalive", "event: block", 'data: {"a":', "data: 1}", "", "", "data: x", ""]
    events = [e for e in map(parser.feed, lines) if e is not None]
    assert events == [("block", '{"a":\n1}'), ("message", "x")]
