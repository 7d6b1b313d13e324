"""Key admission on the native counters, with an injected clock."""

from __future__ import annotations

import pytest

from ensemble.errors import InvalidRequest, RateLimited
from ensemble.ratelimit import Admission, slot_count
from support.records import key_record as key


@pytest.mark.parametrize(("window", "slots"), [(60_000, 60), (1000, 50), (1001, 13), (7, 7), (1, 1)])
def test_slot_count_divides_the_window(window: int, slots: int) -> None:
    assert slot_count(window) == slots and window % slots == 0


@pytest.mark.parametrize("window_s", [60.0, 1.0, 1.001, 0.05])
def test_any_window_size_builds(window_s: float) -> None:
    Admission(window_s=window_s, default_rpm=0, default_tpm=0)


def test_rpm_allows_exactly_n_then_429_with_retry_after() -> None:
    now = [1_000_000]
    a = Admission(window_s=60, default_rpm=0, default_tpm=0, clock=lambda: now[0])
    k = key(rpm=3)
    for _ in range(3):
        a.admit_key(k, 10)
    with pytest.raises(RateLimited) as e:
        a.admit_key(k, 10)
    assert 0 < e.value.retry_after_s <= 60
    now[0] += int(e.value.retry_after_s * 1000)
    a.admit_key(k, 10)  # a slot freed up exactly when promised


def test_defaults_apply_when_key_has_no_limit() -> None:
    a = Admission(window_s=60, default_rpm=1, default_tpm=0, clock=lambda: 5_000)
    a.admit_key(key(), 1)
    with pytest.raises(RateLimited):
        a.admit_key(key(), 1)


def test_request_larger_than_the_tpm_limit_is_a_400_not_a_429() -> None:
    a = Admission(window_s=60, default_rpm=0, default_tpm=0, clock=lambda: 5_000)
    with pytest.raises(InvalidRequest, match="max_tokens"):
        a.admit_key(key(tpm=100), 101)


def test_reconcile_returns_unused_tokens() -> None:
    now = [10_000]
    a = Admission(window_s=60, default_rpm=0, default_tpm=0, clock=lambda: now[0])
    k = key(tpm=1000)
    r = a.admit_key(k, 900)
    with pytest.raises(RateLimited):
        a.admit_key(k, 200)
    a.reconcile(r, 100)  # the answer was short: 800 tokens come back
    a.admit_key(k, 800)
    assert a.info(k).remaining_tokens == 100
