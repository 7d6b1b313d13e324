"""Model-free properties of RateLimiter.admit's retry_after, on random histories (hypothesis).

After a refusal with ``retry_after_ms = R`` (and no other traffic), the same admission is still
refused at ``now + R - 1`` and admitted at ``now + R``: R is exactly the soonest time every
refusing scope has room.
"""

from __future__ import annotations

from hypothesis import event, given, settings
from hypothesis import strategies as st

from ensemble._native import RateLimiter

SCOPES = ["key:a", "key:b", "ep:x:m"]

_op = st.tuples(
    st.integers(min_value=0, max_value=7_000),  # time step (ms) before this admission
    st.lists(st.sampled_from(SCOPES), min_size=1, max_size=3, unique=True),
    st.integers(min_value=0, max_value=40),  # tokens
    st.sampled_from(["keep", "reconcile", "release"]),
    st.integers(min_value=0, max_value=60),  # actual tokens for reconcile
)


@settings(max_examples=300, deadline=None)
@given(
    window=st.sampled_from([(1_000, 10), (60_000, 60), (6_000, 3)]),
    limits=st.lists(
        st.tuples(st.integers(min_value=0, max_value=6), st.integers(min_value=0, max_value=100)),
        min_size=3,
        max_size=3,
    ),
    history=st.lists(_op, max_size=40),
    global_view=st.one_of(
        st.none(), st.tuples(st.sampled_from(SCOPES), st.integers(0, 5), st.integers(0, 80))
    ),
    probe=st.tuples(
        st.lists(st.sampled_from(SCOPES), min_size=1, max_size=3, unique=True), st.integers(0, 40)
    ),
)
def test_retry_after_is_the_exact_soonest_time(
    window: tuple[int, int],
    limits: list[tuple[int, int]],
    history: list[tuple[int, list[str], int, str, int]],
    global_view: tuple[str, int, int] | None,
    probe: tuple[list[str], int],
) -> None:
    window_ms, slots = window
    rl = RateLimiter(window_ms, slots)
    for scope, (rpm, tpm) in zip(SCOPES, limits, strict=True):
        rl.configure(scope, rpm, tpm)
    now = 10_000_000
    if global_view is not None:
        rl.set_global(global_view[0], global_view[1], global_view[2], now)
    for step, scopes, tokens, then, actual in history:
        now += step * window_ms // 60_000 if window_ms < 60_000 else step
        ok, retry, idx = rl.admit(scopes, tokens, now)
        if ok:
            assert (retry, idx) == (0, -1)
        if ok and then == "reconcile":
            rl.reconcile(scopes, tokens, actual, now, now)
        elif ok and then == "release":
            rl.release(scopes, tokens, now, now)
    scopes, tokens = probe
    before = {s: rl.usage(s, now) for s in SCOPES}
    checked = rl.check(scopes, tokens, now)
    assert {s: rl.usage(s, now) for s in SCOPES} == before  # check reserves nothing
    ok, retry, idx = rl.admit(scopes, tokens, now)
    assert checked == (ok, retry, idx)
    if ok:
        return
    # A refusal changes nothing.
    assert {s: rl.usage(s, now) for s in SCOPES} == before
    assert 0 <= idx < len(scopes)
    refusing = scopes[idx]
    rpm, tpm = limits[SCOPES.index(refusing)]
    assert rpm or tpm
    assert 0 < retry <= window_ms
    if any(limits[SCOPES.index(s)][1] and tokens > limits[SCOPES.index(s)][1] for s in scopes):
        assert retry == window_ms  # can never fit: a full window
        return
    assert not rl.admit(scopes, tokens, now + retry - 1)[0]
    assert rl.admit(scopes, tokens, now + retry)[0]
    event("refused, retry checked")


@settings(max_examples=200, deadline=None)
@given(
    rpm=st.integers(0, 10),
    tpm=st.integers(0, 500),
    history=st.lists(st.tuples(st.integers(0, 3_000), st.integers(0, 80)), max_size=30),
)
def test_snapshot_matches_usage(rpm: int, tpm: int, history: list[tuple[int, int]]) -> None:
    rl = RateLimiter()
    rl.configure("k", rpm, tpm)
    now = 0
    for step, tokens in history:
        now += step
        rl.admit(["k"], tokens, now)
        used_req, used_tok = rl.usage("k", now)
        limit_req, rem_req, limit_tok, rem_tok, reset_ms = rl.snapshot("k", now)
        assert (limit_req, limit_tok) == (rpm, tpm)
        assert rem_req == max(rpm - used_req, 0)
        assert rem_tok == max(tpm - used_tok, 0)
        assert 0 <= reset_ms <= 60_000
        # After reset_ms, everything counted now has left the window.
        assert rl.usage("k", now + reset_ms) == (0, 0)
        if reset_ms:
            assert rl.usage("k", now + reset_ms - 1) != (0, 0)
