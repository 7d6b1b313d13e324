"""The native routing pieces against the straightforward Python they replaced: prompt fingerprints
(`prompt_keys` vs CRC32C of the encoded parts), the pool ranking (`RateLimiter.rank` vs
utilisation + rotation + stable sort), the affinity table through its binding, and the clock."""

from __future__ import annotations

import random
import time

import pytest

from ensemble._native import AffinityTable, RateLimiter, monotonic_ms, prefix_fingerprint, prompt_keys
from ensemble.types import ImageContent, MediaSource, Message, TextContent

CHARS_PER_TOKEN = 4


def reference_keys(tag: int, session: str | None, messages: list[Message]) -> dict[str, object]:
    """The Python fingerprinting the native one replaced (role initial + text + NUL per message)."""
    parts = [(m.role[0] + m.text() + "\x00").encode() for m in messages]
    fps = prefix_fingerprint(parts)
    sizes = [sum(len(p) for p in parts[: i + 1]) for i in range(len(parts))]
    n = len(parts)
    lead = 0
    while lead < n and messages[lead].role == "system":
        lead += 1
    return {
        "session": session or None,
        "full": tag << 32 | fps[-1],
        "full_tokens": sizes[-1] // CHARS_PER_TOKEN,
        "previous": tag << 32 | fps[n - 3] if n > 2 else None,
        "previous_tokens": sizes[n - 3] // CHARS_PER_TOKEN if n > 2 else 0,
        "lead": tag << 32 | fps[lead - 1] if 0 < lead < n else None,
        "lead_tokens": sizes[lead - 1] // CHARS_PER_TOKEN if 0 < lead < n else 0,
    }


def native_keys(tag: int, session: str | None, messages: list[Message]) -> dict[str, object]:
    k = prompt_keys(tag, session, messages)
    return {
        "session": k.session,
        "full": k.full,
        "full_tokens": k.full_tokens,
        "previous": k.previous,
        "previous_tokens": k.previous_tokens,
        "lead": k.lead,
        "lead_tokens": k.lead_tokens,
    }


IMAGE = ImageContent(source=MediaSource(type="url", url="https://example.com/cat.png"))

CONVERSATIONS = [
    [Message(role="user", content="hi")],
    [Message(role="system", content="Be brief. " * 500), Message(role="user", content="q")],
    [
        Message(role="system", content="s1"),
        Message(role="system", content="s2 ünïcödé ✓"),
        Message(role="user", content="first"),
        Message(role="assistant", content="answer"),
        Message(role="user", content=[TextContent(text="look "), IMAGE, TextContent(text="at this")]),
    ],
    [Message(role="system", content="only a system prompt")],
    [
        Message(role="user", content="u"),
        Message(role="system", content="late"),
        Message(role="user", content="v"),
    ],
    [Message(role="user", content=[IMAGE])],
]


@pytest.mark.parametrize("messages", CONVERSATIONS)
@pytest.mark.parametrize(("tag", "session"), [(0, None), (7, "sess-1"), (3, "")])
def test_prompt_keys_match_the_python_reference(
    tag: int, session: str | None, messages: list[Message]
) -> None:
    assert native_keys(tag, session, messages) == reference_keys(tag, session, messages)


def test_prompt_keys_reject_what_is_not_a_message() -> None:
    with pytest.raises(AttributeError):
        prompt_keys(0, None, [object()])  # type: ignore[list-item]
    # Any iterable of messages works, not only lists.
    assert prompt_keys(0, None, tuple(CONVERSATIONS[1])).full == prompt_keys(0, None, CONVERSATIONS[1]).full


def reference_rank(
    utils: list[float], requests: list[int], weights: list[int], in_flight: list[int], shift: int
) -> tuple[list[int], list[float]]:
    """The Python ranking the native one replaced."""
    n = len(utils)
    utils = [u / w if u >= 0 else u for u, w in zip(utils, weights, strict=True)]
    if any(u < 0 for u in utils):
        counts = [(r + f) / w for r, f, w in zip(requests, in_flight, weights, strict=True)]
        total = sum(counts) or 1.0
        utils = [u if u >= 0 else counts[i] / total for i, u in enumerate(utils)]
    rotated = list(range(n))[shift % n :] + list(range(n))[: shift % n]
    order = sorted(rotated, key=utils.__getitem__)
    return order, [utils[i] for i in order]


def test_rank_matches_the_python_reference() -> None:
    rng = random.Random(5)
    for trial in range(300):
        limiter = RateLimiter(60_000, 60)
        n = rng.randint(2, 5)
        scopes = [f"ep:{trial}:{i}" for i in range(n)]
        for scope in scopes:
            rpm = rng.choice([0, 0, 4, 10, 100])
            limiter.configure(scope, rpm, rng.choice([0, 1000, 5000]))
            for _ in range(rng.randint(0, 6)):
                limiter.admit([scope], rng.randint(0, 400), 1_000)
        weights = [rng.choice([1, 1, 2, 3]) for _ in scopes]
        in_flight = [rng.randint(0, 3) for _ in scopes]
        shift = rng.randint(0, 10)
        utils, requests = limiter.load(scopes, 2_000)
        assert requests == [limiter.usage(s, 2_000)[0] for s in scopes]
        expected = reference_rank(utils, requests, weights, in_flight, shift)
        assert limiter.rank(scopes, [], weights, in_flight, shift, 2_000) == expected


def test_rank_floors_raise_utilisation() -> None:
    limiter = RateLimiter(60_000, 60)
    limiter.configure("a", 10, 0)
    limiter.configure("b", 10, 0)
    limiter.admit(["b"], 0, 0)  # b: 10% used by our counters, a: 0%
    assert limiter.rank(["a", "b"], [], [], [], 0, 1)[0] == [0, 1]
    # The provider says a is 50% used: b goes first.
    assert limiter.rank(["a", "b"], [0.5, -1.0], [], [], 0, 1) == ([1, 0], [0.1, 0.5])


def test_affinity_table_binding() -> None:
    table = AffinityTable(2)
    system = Message(role="system", content="x" * 8000)
    keys = prompt_keys(0, "s", [system, Message(role="user", content="q")])
    assert table.lookup(keys, 0) is None
    table.remember(keys, 5, 0, 1000)
    assert len(table) == 2  # bounded: session + whole prompt + lead, the oldest evicted
    assert table.evictions == 1
    assert table.lookup(keys, 999) == [(5, keys.lead_tokens)]  # the session entry was evicted
    assert table.lookup(keys, 1000) is None  # expired
    assert (table.hits, table.misses, table.max_entries) == (1, 2, 2)
    # Served elsewhere too: both endpoints hold it, the most recent first (same tokens).
    table = AffinityTable(10)
    table.remember(keys, 5, 0, 1000)
    table.remember(keys, 1, 1, 1000)
    assert table.lookup(keys, 2) == [(1, keys.full_tokens), (5, keys.full_tokens)]


def test_monotonic_ms_is_pythons_monotonic_clock() -> None:
    if time.get_clock_info("monotonic").implementation != "clock_gettime(CLOCK_MONOTONIC)":
        pytest.skip("the native clock stands in for Python's only where both are CLOCK_MONOTONIC")
    before = time.monotonic_ns() // 1_000_000
    native = monotonic_ms()
    after = time.monotonic_ns() // 1_000_000
    assert before <= native <= after
