"""ensemble._native.RateLimiter with a fake clock (times are plain integers in ms)."""

from __future__ import annotations

import threading

import pytest

from ensemble._native import RateLimiter

KEY = "key:k1"
EP = "ep:anthropic-primary:claude-sonnet-4-5"


class FakeClock:
    def __init__(self, now_ms: int = 1_000_000) -> None:
        self.now_ms = now_ms

    def advance(self, ms: int) -> int:
        self.now_ms += ms
        return self.now_ms


def test_bad_geometry_is_value_error() -> None:
    with pytest.raises(ValueError, match="multiple"):
        RateLimiter(window_ms=1000, slots=7)
    with pytest.raises(ValueError):
        RateLimiter(slots=0)
    assert (RateLimiter().window_ms, RateLimiter().slots) == (60_000, 60)


def test_unknown_scope_is_unlimited_and_untracked() -> None:
    rl = RateLimiter()
    for _ in range(100):
        assert rl.admit(["key:nobody"], 10**9, 0) == (True, 0, -1)
    assert rl.snapshot("key:nobody", 0) == (0, 0, 0, 0, 0)
    assert rl.drain_deltas() == []
    assert len(rl) == 0


def test_window_roll_over() -> None:
    clock = FakeClock(0)
    rl = RateLimiter()  # 60 s window, 1 s slots
    rl.configure(KEY, 2, 0)
    assert rl.admit([KEY], 0, clock.now_ms)[0]
    assert rl.admit([KEY], 0, clock.advance(30_500))[0]
    assert rl.admit([KEY], 0, clock.advance(1_000)) == (False, 28_500, 0)  # slot 0 leaves at 60 000
    assert rl.admit([KEY], 0, clock.advance(28_499)) == (False, 1, 0)
    assert rl.admit([KEY], 0, clock.advance(1)) == (True, 0, -1)
    assert rl.snapshot(KEY, clock.now_ms) == (2, 0, 0, 0, 60_000)
    assert rl.snapshot(KEY, clock.advance(120_000)) == (2, 2, 0, 0, 0)


def test_small_window_geometry() -> None:
    rl = RateLimiter(window_ms=1_000, slots=10)
    rl.configure(KEY, 1, 0)
    assert rl.admit([KEY], 0, 50)[0]
    assert rl.admit([KEY], 0, 999) == (False, 1, 0)
    assert rl.admit([KEY], 0, 1_000)[0]


def test_reservation_and_reconcile() -> None:
    clock = FakeClock(0)
    rl = RateLimiter()
    rl.configure(KEY, 0, 10_000)
    reserved = 4_000  # estimated prompt tokens + max_tokens
    t0 = clock.now_ms
    assert rl.admit([KEY], reserved, t0)[0]
    assert rl.snapshot(KEY, t0)[3] == 6_000
    assert rl.admit([KEY], 7_000, t0) == (False, 60_000, 0)
    # The response used fewer tokens: the difference is returned to the slot of the reservation.
    rl.reconcile([KEY], reserved, 1_500, t0, clock.advance(5_000))
    assert rl.snapshot(KEY, clock.now_ms)[3] == 8_500
    assert rl.admit([KEY], 7_000, clock.now_ms)[0]
    # ...or more: 1 500 -> 3 000 (still in the window) pushes usage over the limit.
    rl.reconcile([KEY], 1_500, 3_000, t0, clock.now_ms)
    assert rl.usage(KEY, clock.now_ms) == (2, 10_000)
    assert rl.snapshot(KEY, clock.now_ms)[3] == 0
    # The corrected usage leaves with the original slot (t0), the second with its own.
    assert rl.usage(KEY, 60_000) == (1, 7_000)


def test_reconcile_after_window_charges_only_excess_now() -> None:
    rl = RateLimiter()
    rl.configure(KEY, 0, 0)
    rl.admit([KEY], 100, 0)
    rl.reconcile([KEY], 100, 10, 0, 600_000)
    assert rl.usage(KEY, 600_000) == (0, 0)
    rl.reconcile([KEY], 100, 400, 0, 600_000)
    assert rl.usage(KEY, 600_000) == (0, 300)


def test_check_reserves_nothing() -> None:
    rl = RateLimiter()
    rl.configure(EP, 1, 0)
    assert rl.check([KEY, EP], 5, 0) == (True, 0, -1)
    assert rl.usage(EP, 0) == (0, 0)
    assert rl.admit([KEY, EP], 5, 0) == (True, 0, -1)
    assert rl.check([KEY, EP], 5, 1_000) == (False, 59_000, 1)


def test_block_until_upstream_cooldown() -> None:
    rl = RateLimiter()
    rl.block_until(EP, 31_000)  # upstream 429 with retry-after: 30 s, seen at 1 000
    assert rl.admit([KEY, EP], 10, 1_000) == (False, 30_000, 1)
    assert rl.check([EP], 10, 30_999) == (False, 1, 0)
    assert rl.admit([EP], 10, 31_000) == (True, 0, -1)


def test_release_returns_request_and_tokens() -> None:
    rl = RateLimiter()
    rl.configure(KEY, 1, 100)
    assert rl.admit([KEY], 100, 0)[0]
    assert not rl.admit([KEY], 1, 10)[0]
    rl.release([KEY], 100, 0, 10)
    assert rl.usage(KEY, 10) == (0, 0)
    assert rl.admit([KEY], 100, 10)[0]


def test_multi_scope_all_or_nothing() -> None:
    rl = RateLimiter()
    rl.configure(KEY, 100, 1_000)
    rl.configure(EP, 1, 0)
    assert rl.admit([KEY, EP], 10, 0) == (True, 0, -1)
    assert rl.admit([KEY, EP], 10, 1) == (False, 59_999, 1)
    assert rl.usage(KEY, 1) == (1, 10)  # the refused admission charged nothing
    # Failover: refund the endpoint only; the key keeps its request.
    rl.release([EP], 10, 0, 2)
    assert rl.admit([KEY, EP], 10, 2) == (True, 0, -1)
    assert rl.usage(KEY, 2) == (2, 20)
    # Key refuses first (tokens), endpoint refuses too: index 0, retry covers both.
    rl.configure("key:small", 0, 5)
    assert rl.admit(["key:small", EP], 10, 3) == (False, 60_000, 0)


def test_retry_after_is_exact() -> None:
    rl = RateLimiter()
    rl.configure(EP, 0, 100)
    for t, tokens in [(0, 30), (10_000, 30), (20_000, 30)]:
        assert rl.admit([EP], tokens, t)[0]
    # 90 used; 50 needs two slots (0 s and 10 s) gone: at 70 000.
    ok, retry, idx = rl.admit([EP], 50, 25_000)
    assert (ok, retry, idx) == (False, 45_000, 0)
    assert not rl.admit([EP], 50, 25_000 + retry - 1)[0]
    assert rl.admit([EP], 50, 25_000 + retry)[0]


def test_snapshot_for_headers() -> None:
    rl = RateLimiter()
    rl.configure(KEY, 60, 100_000)
    rl.admit([KEY], 1_000, 0)
    rl.admit([KEY], 2_000, 30_000)
    assert rl.snapshot(KEY, 45_000) == (60, 58, 100_000, 97_000, 45_000)


def test_deltas_and_global_view() -> None:
    rl = RateLimiter()
    rl.configure(EP, 10, 1_000)
    rl.admit([EP], 100, 0)
    rl.admit([EP], 100, 0)
    rl.reconcile([EP], 100, 50, 0, 1)
    assert rl.drain_deltas() == [(EP, 2, 150)]
    assert rl.drain_deltas() == []
    # Other instances used 8 requests / 800 tokens in the window.
    rl.set_global(EP, 8, 800, 1_000)
    assert rl.snapshot(EP, 1_000)[:4] == (10, 0, 1_000, 50)
    assert rl.admit([EP], 1, 1_000) == (False, 59_000, 0)  # room once the local slot 0 leaves (60 000)
    # Global views are not local deltas.
    assert rl.drain_deltas() == []
    # A fresh, smaller global view lets traffic through.
    rl.set_global(EP, 0, 0, 2_000)
    assert rl.admit([EP], 1, 2_000)[0]
    assert rl.drain_deltas() == [(EP, 1, 1)]
    # A stale global view (Redis gone) stops counting after one window.
    rl.set_global(EP, 1_000, 1_000, 3_000)
    assert not rl.admit([EP], 1, 3_000)[0]
    assert rl.admit([EP], 1, 63_000)[0]


def test_negative_values_rejected() -> None:
    rl = RateLimiter()
    with pytest.raises(OverflowError):
        rl.admit([KEY], -1, 0)


def test_threads_hammering_admit_lose_no_update() -> None:
    rl = RateLimiter()
    scopes = [f"key:{i}" for i in range(4)]
    for s in scopes:
        rl.configure(s, 0, 0)
    rl.configure(EP, 5_000, 0)
    n_threads, per_thread = 8, 2_000
    admitted = [0] * n_threads
    start = threading.Barrier(n_threads)

    def work(t: int) -> None:
        start.wait()
        key = scopes[t % 4]
        for i in range(per_thread):
            ok, _, _ = rl.admit([key, EP], 3, i % 50)
            if ok:
                admitted[t] += 1
                if i % 3 == 0:
                    rl.reconcile([key, EP], 3, 5, i % 50, i % 50)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    total = sum(admitted)
    assert total == 5_000  # the endpoint cap is hit exactly
    assert rl.usage(EP, 0)[0] == 5_000
    per_key = [rl.usage(s, 0)[0] for s in scopes]
    assert sum(per_key) == total
    for k in range(4):
        assert per_key[k] == admitted[k] + admitted[k + 4]
    deltas = {scope: (r, t) for scope, r, t in rl.drain_deltas()}
    assert deltas[EP][0] == 5_000
    assert deltas[EP][1] == rl.usage(EP, 0)[1]
    assert sum(deltas.get(s, (0, 0))[1] for s in scopes) == deltas[EP][1]
