"""Router and endpoint admission on a fake clock: strategies, weights, cache affinity (the value of a
hit as a share of the input cost, its thresholds, moves between the endpoints holding a prompt),
TTL and LRU bounds, cool-downs, and the provider's rate-limit headers."""

from __future__ import annotations

import logging
from collections import Counter
from datetime import UTC, datetime

import pytest

from ensemble.config.durations import Duration
from ensemble.config.schema import CacheConfig, EndpointConfig, ModelConfig, Pricing, ProviderConfig
from ensemble.providers.mock import MockProvider
from ensemble.ratelimit import Admission, UpstreamView, parse_headers
from ensemble.ratelimit.upstream import parse_duration_ms
from ensemble.router import Router
from ensemble.router.value import CacheValue
from ensemble.types import InferenceRequest, Message, Usage

PRICING = Pricing(input=3.0, output=15.0, cache_read=0.3)  # a cached token saves $2.7 per million


class Clock:
    def __init__(self) -> None:
        self.ms = 1_000_000

    def __call__(self) -> int:
        return self.ms


def make_router(
    clock: Clock,
    strategy: str = "session_affinity",
    endpoints: list[EndpointConfig] | None = None,
    pricing: Pricing = PRICING,
    **cache: object,
) -> tuple[Router, Admission]:
    cfg = ProviderConfig(
        name="anthropic",
        type="anthropic",
        strategy=strategy,  # type: ignore[arg-type]
        endpoints=endpoints or [EndpointConfig(id=f"e{i}", api_key="k", rpm_limit=100) for i in range(3)],
        models=[ModelConfig(name="m", pricing=pricing)],
    )
    admission = Admission(window_s=60, default_rpm=0, default_tpm=0, clock=clock)
    router = Router([MockProvider(cfg)], CacheConfig(**cache), admission, clock)  # type: ignore[arg-type]
    return router, admission


def request(system_tokens: int, user: str = "hi", session: str | None = None) -> InferenceRequest:
    return InferenceRequest(
        model="m",
        messages=[
            Message(role="system", content="s" * (system_tokens * 4)),
            Message(role="user", content=user),
        ],
        session_id=session,
    )


def send(router: Router, admission: Admission, req: InferenceRequest) -> str:
    """The gateway's loop without the upstream: first admissible candidate, then remember."""
    plan = router.plan("m", req)
    for cand in plan.candidates:
        if admission.admit_endpoint(cand.limits, 10, router.clock()) == 0:
            router.remember(plan, cand)
            return cand.target.endpoint.id
    raise AssertionError("no candidate admitted")


def fill(admission: Admission, router: Router, endpoint: str, n: int) -> None:
    lim = admission.endpoint(endpoint, "m")
    for _ in range(n):
        assert admission.admit_endpoint(lim, 1, router.clock()) == 0


def test_least_used_spreads_sequential_requests_evenly() -> None:
    router, admission = make_router(Clock(), strategy="least_used")
    served = Counter(send(router, admission, request(10, f"q{i}")) for i in range(30))
    assert served == {"e0": 10, "e1": 10, "e2": 10}


def test_round_robin_follows_weights() -> None:
    endpoints = [EndpointConfig(id="a", api_key="k", weight=2), EndpointConfig(id="b", api_key="k")]
    router, admission = make_router(Clock(), strategy="round_robin", endpoints=endpoints)
    served = Counter(send(router, admission, request(10)) for _ in range(30))
    assert served == {"a": 20, "b": 10}


def test_weight_biases_least_used() -> None:
    endpoints = [
        EndpointConfig(id="a", api_key="k", rpm_limit=100, weight=3),
        EndpointConfig(id="b", api_key="k", rpm_limit=100),
    ]
    router, admission = make_router(Clock(), strategy="least_used", endpoints=endpoints)
    served = Counter(send(router, admission, request(10, f"q{i}")) for i in range(40))
    assert served == {"a": 30, "b": 10}


def test_value_is_the_share_of_the_input_cost_saved() -> None:
    sonnet = CacheValue(Pricing(input=3.0, cache_read=0.3, cache_write=3.75))
    mini = CacheValue(Pricing(input=0.15, cache_read=0.075))
    # No write premium: cached * (input - read) / (prompt * input).
    assert mini.fraction(6000, 8000) == pytest.approx(6000 * 0.075 / (8000 * 0.15))
    # Anthropic's premium: a miss writes the cached part again at 1.25x input.
    assert sonnet.fraction(6000, 8000) == pytest.approx(6000 * 3.45 / (6000 * 3.75 + 2000 * 3.0))
    assert sonnet.usd(6000) == pytest.approx(6000 * 3.45e-6)
    # The same discount means the same value, whatever the model costs ($1 Haiku, $15 Opus).
    haiku = CacheValue(Pricing(input=1.0, cache_read=0.1, cache_write=1.25))
    opus = CacheValue(Pricing(input=15.0, cache_read=1.5, cache_write=18.75))
    assert haiku.fraction(5000, 6000) == pytest.approx(opus.fraction(5000, 6000))
    assert opus.usd(5000) == pytest.approx(15 * haiku.usd(5000))
    # Below the providers' cache minimum nothing is cached; a whole cached prompt stays below 1.
    assert sonnet.fraction(1023, 1023) == 0.0 and sonnet.usd(1023) == 0.0
    assert 0.9 < sonnet.fraction(9000, 9000) < 1.0
    # Unpriced: assume the smallest provider discount (50%), and no dollars.
    free = CacheValue(Pricing())
    assert free.fraction(4000, 4000) == pytest.approx(0.5) and free.usd(4000) == 0.0


def test_high_value_prefix_sticks_even_when_busier() -> None:
    clock = Clock()
    router, admission = make_router(clock, low_value_threshold=0.05, high_value_threshold=0.5)
    first = send(router, admission, request(8000, "a"))
    fill(admission, router, first, 60)  # now by far the busiest
    plan = router.plan("m", request(8000, "b"))
    assert plan.candidates[0].target.endpoint.id == first
    assert plan.decision.reason == "affinity_high_value"
    tokens = len("s" * 32000 + "s\0") // 4  # the lead key: the system message as hashed
    assert plan.decision.value == pytest.approx(0.9 * tokens / (tokens + 1))
    assert plan.decision.cache_value == pytest.approx(tokens * 2.7e-6)


def test_medium_value_sticks_until_the_endpoint_is_too_busy() -> None:
    clock = Clock()
    # A 2000-token system prompt shared by requests with 6000 tokens of their own: value ~0.22,
    # about half way between the thresholds: allowance ~0.5 * 0.8 = 0.4 utilisation.
    router, admission = make_router(clock, low_value_threshold=0.05, high_value_threshold=0.4)
    doc = "d" * 24_000
    first = send(router, admission, request(2000, "a" + doc))
    fill(admission, router, first, 30)  # 31% of its 100 rpm, others at 0%: within the allowance
    plan = router.plan("m", request(2000, "b" + doc))
    assert 0.2 < plan.decision.value < 0.25
    assert plan.candidates[0].target.endpoint.id == first and plan.decision.reason == "affinity"
    fill(admission, router, first, 20)  # 51%: beyond it
    plan = router.plan("m", request(2000, "c" + doc))
    assert plan.candidates[0].target.endpoint.id != first
    assert plan.decision.reason == "least_used"
    assert plan.decision.cost_penalty == plan.decision.cache_value > 0
    assert "busier than the least used endpoint" in plan.passed_over
    assert router.stats()["overridden_busy"] == 1


def test_low_value_ignores_affinity() -> None:
    clock = Clock()
    router, admission = make_router(clock, low_value_threshold=0.3, high_value_threshold=0.6)
    doc = "d" * 40_000  # the shared 2000-token prefix is a sixth of the prompt: value 0.15
    first = send(router, admission, request(2000, "a" + doc))
    fill(admission, router, first, 1)
    plan = router.plan("m", request(2000, "b" + doc))
    assert plan.candidates[0].target.endpoint.id != first
    assert plan.decision.reason == "least_used" and plan.decision.value < 0.3
    assert plan.home == -1  # not in force: leaving it is no move
    assert router.stats()["ignored_low_value"] == 1


def session_turns(router: Router, admission: Admission, system_tokens: int, turns: int) -> list[str]:
    messages = [Message(role="system", content="s" * (system_tokens * 4))]
    served = []
    for turn in range(turns):
        messages.append(Message(role="user", content=f"question {turn}"))
        req = InferenceRequest(model="m", messages=list(messages), session_id="sess")
        served.append(send(router, admission, req))
        messages.append(Message(role="assistant", content=f"answer {turn} " * 20))
    return served


@pytest.mark.parametrize(
    ("pricing", "system_tokens"),
    [
        (Pricing(input=3.0, output=15.0, cache_read=0.3, cache_write=3.75), 6000),  # Claude Sonnet
        (Pricing(input=0.15, output=0.6, cache_read=0.075), 2000),  # gpt-4o-mini
    ],
)
def test_a_cacheable_session_stays_under_the_shipped_defaults(pricing: Pricing, system_tokens: int) -> None:
    clock = Clock()
    endpoints = [EndpointConfig(id=f"e{i}", api_key="k") for i in range(3)]  # idle, no limits
    router, admission = make_router(clock, endpoints=endpoints, pricing=pricing)
    served = session_turns(router, admission, system_tokens, 8)
    assert len(set(served)) == 1, served
    assert router.stats()["stuck"] == 7


def test_a_session_moves_to_the_endpoint_holding_most_of_its_prompt(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    endpoints = [EndpointConfig(id=f"e{i}", api_key="k", rpm_limit=4) for i in range(3)]
    router, admission = make_router(clock, endpoints=endpoints)
    messages = [Message(role="system", content="s" * 24_000)]

    def turn(n: int) -> tuple[str, str, str]:
        messages.append(Message(role="user", content=f"question {n}"))
        req = InferenceRequest(model="m", messages=list(messages), session_id="sess")
        plan = router.plan("m", req)
        for cand in plan.candidates:
            if admission.admit_endpoint(cand.limits, 10, clock.ms) == 0:
                decision = router.decision_for(plan, cand)
                router.remember(plan, cand, f"req_{n}")
                messages.append(Message(role="assistant", content=f"answer {n}"))
                return cand.target.endpoint.id, decision.reason, plan.candidates[0].target.endpoint.id
        raise AssertionError("no candidate admitted")

    home, _, _ = turn(0)
    assert [turn(n)[1] for n in (1, 2, 3)] == ["affinity_high_value"] * 3
    # The home is at its 4 rpm: admission refuses it and the gateway takes the next candidate.
    with caplog.at_level(logging.INFO, logger="ensemble.router"):
        second, reason, first_choice = turn(4)
    assert (first_choice, reason) == (home, "failover") and second != home
    (record,) = [r for r in caplog.records if r.name == "ensemble.router"]
    text = record.getMessage()
    assert text.startswith(f"affinity move req_4: {home} -> {second} because it is at its RPM/TPM limit")
    assert "holds none of the" in text
    # The home cools down after a 429: the plan sends the session to the endpoint now holding the
    # most of it (the second), and the home keeps its copy as a fallback for later.
    router.providers[0].endpoints[int(home[1])].cooldown_until = clock.ms / 1000 + 30
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ensemble.router"):
        served, reason, first_choice = turn(5)
    assert (served, reason, first_choice) == (second, "affinity_high_value", second)
    assert not caplog.records  # the second is now where most of the prompt is: no move
    # The second fills up too (4 rpm), and the home is still cooling: a move to the third endpoint.
    for n in range(6, 8):
        assert turn(n)[0] == second
    with caplog.at_level(logging.INFO, logger="ensemble.router"):
        third, _, _ = turn(8)
    assert third not in (home, second)
    assert f"{second} -> {third} because it is at its RPM/TPM limit" in caplog.records[0].getMessage()
    stats = router.stats()
    assert stats["moved"] == 2 and stats["moved_to_holder"] == 0
    # Back after the cool-down and a minute: the home holds the system prompt (its older copy) but
    # the third endpoint holds the most (the whole conversation): it stays there.
    clock.ms += 61_000
    router.providers[0].endpoints[int(home[1])].cooldown_until = 0
    assert turn(9)[0] == third


def test_a_holder_cooling_down_sends_the_request_to_the_next_holder(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    router, admission = make_router(clock)
    system = request(4000, "a")
    first = send(router, admission, system)
    # Make another endpoint hold the same system prompt too (a one-shot that had to go there).
    e_first = next(e for e in router.providers[0].endpoints if e.id == first)
    e_first.cooldown_until = clock.ms / 1000 + 10
    e_first.cooling_for_limit = True
    second = send(router, admission, request(4000, "b"))
    assert second != first
    clock.ms += 11_000
    # Both hold it; the most recent (second) ranks first on equal tokens. Cool it down: the request
    # goes to the first, which still holds its copy.
    e_second = next(e for e in router.providers[0].endpoints if e.id == second)
    e_second.cooldown_until = clock.ms / 1000 + 10
    e_second.cooling_for_limit = True
    plan = router.plan("m", request(4000, "c"))
    assert [h for h, _ in plan.holders or ()] == [int(second[1]), int(first[1])]
    assert plan.candidates[0].target.endpoint.id == first
    assert plan.decision.reason == "affinity_high_value"
    assert plan.passed_over == "it is cooling down after a rate limit (429/529)"
    with caplog.at_level(logging.INFO, logger="ensemble.router"):
        router.remember(plan, plan.candidates[0], "req_c")
    assert f"{second} -> {first} because it is cooling down" in caplog.records[0].getMessage()
    assert "holds ~" in caplog.records[0].getMessage()
    assert router.stats()["moved_to_holder"] == 1


def test_failover_gives_up_only_the_value_the_chosen_endpoint_lacks() -> None:
    clock = Clock()
    router, admission = make_router(clock)
    first = send(router, admission, request(4000, "a"))
    plan = router.plan("m", request(4000, "b"))
    assert plan.candidates[0].target.endpoint.id == first
    other = plan.candidates[1]
    decision = router.decision_for(plan, other)
    assert decision.reason == "failover" and decision.affinity_endpoint == first
    assert decision.cost_penalty == pytest.approx(decision.cache_value)  # the other holds nothing
    assert router.decision_for(plan, plan.candidates[0]) is plan.decision
    assert plan.attempted == 1 << other.index | 1 << plan.candidates[0].index


def test_affinity_expires_with_the_provider_ttl_and_is_lru_bounded() -> None:
    clock = Clock()
    router, admission = make_router(
        clock,
        low_value_threshold=0.0,
        high_value_threshold=0.0,
        ttls={"anthropic": Duration(60)},
        max_cache_entries=4,
    )
    first = send(router, admission, request(2000, "a", session="s1"))
    fill(admission, router, first, 5)
    clock.ms += 59_000
    assert router.plan("m", request(2000, "b", session="s1")).candidates[0].target.endpoint.id == first
    clock.ms += 2_000  # past the 60 s TTL
    assert router.plan("m", request(2000, "c", session="s1")).candidates[0].target.endpoint.id != first
    for i in range(10):  # each remembers its whole-prompt fingerprint: the table stays at 4
        send(
            router,
            admission,
            InferenceRequest(model="m", messages=[Message(role="user", content=f"{i}" * 9000)]),
        )
    stats = router.stats()
    assert stats["entries"] == 4 and stats["evictions"] > 0
    assert stats["hits"] >= 1 and stats["misses"] >= 1


def test_provider_reported_cache_hits_per_configured_endpoint() -> None:
    router, _ = make_router(Clock())
    hits = router.cache_hits
    hits.add("e0", Usage(input_tokens=1000, cached_tokens=0))
    hits.add("e0", Usage(input_tokens=3000, cached_tokens=2000, cache_creation_tokens=500))
    hits.add("elsewhere", Usage(input_tokens=10, cached_tokens=10))  # not configured: not counted
    hits.add("e1", Usage())  # no prompt (a failed request): not counted
    assert hits.view("e0") == {
        "requests": 2,
        "prompt_tokens": 4000,
        "cached_tokens": 2000,
        "cache_creation_tokens": 500,
        "hit_rate": 0.5,
    }
    assert hits.view("e1") == {
        "requests": 0,
        "prompt_tokens": 0,
        "cached_tokens": 0,
        "cache_creation_tokens": 0,
        "hit_rate": None,
    }
    assert hits.view("elsewhere") is None


def test_cooling_endpoints_are_left_out_with_their_wait() -> None:
    clock = Clock()
    router, _ = make_router(clock, strategy="least_used")
    for p in router.providers:
        for e in p.endpoints:
            e.cooldown_until = clock.ms / 1000 + (3 if e.id == "e1" else 10)
            e.cooling_for_limit = e.id != "e0"  # e0 cools down after failures, the others for limits
    plan = router.plan("m", request(10))
    assert plan.candidates == []
    assert plan.cooling_wait_ms == 3001  # the soonest rate-limit wait
    assert plan.failing_wait_ms == 10001  # kept apart: an outage is a 503, not a 429
    router.providers[0].endpoints[2].cooldown_until = 0
    assert [c.target.endpoint.id for c in router.plan("m", request(10)).candidates] == ["e2"]


def test_openai_headers_update_capacity_and_block_until_reset() -> None:
    clock = Clock()
    _, admission = make_router(clock)
    lim = admission.endpoint("e0", "m")
    headers = {
        "x-ratelimit-limit-requests": "500",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "1.5s",
        "x-ratelimit-limit-tokens": "30000",
        "x-ratelimit-remaining-tokens": "29000",
        "x-ratelimit-reset-tokens": "6m0s",
    }
    admission.observe(lim, headers, clock.ms)
    assert admission.admit_endpoint(lim, 10, clock.ms) == 1500
    assert admission.utilisation(lim, clock.ms) == 1.0
    clock.ms += 1500
    assert admission.admit_endpoint(lim, 10, clock.ms) == 0


def test_anthropic_headers_with_rfc3339_reset() -> None:
    view = UpstreamView()
    wall = 1_800_000_000.0
    reset = datetime.fromtimestamp(wall + 20, tz=UTC).isoformat().replace("+00:00", "Z")
    headers = {
        "anthropic-ratelimit-requests-limit": "50",
        "anthropic-ratelimit-requests-remaining": "40",
        "anthropic-ratelimit-requests-reset": reset,
        "anthropic-ratelimit-tokens-limit": "100000",
        "anthropic-ratelimit-tokens-remaining": "0",
        "anthropic-ratelimit-tokens-reset": reset,
    }
    assert parse_headers(headers, view, 5_000, wall)
    assert (view.limit_requests, view.remaining_requests, view.remaining_tokens) == (50, 40, 0)
    assert view.reset_at_ms == 25_000
    assert view.used_fraction() == 1.0
    assert not parse_headers({"content-type": "application/json"}, view, 0, wall)


def test_durations() -> None:
    assert parse_duration_ms("6m0s") == 360_000
    assert parse_duration_ms("1h2m3.5s") == 3_723_500
    assert parse_duration_ms("20ms") == 20
    assert parse_duration_ms("0.5") == 500
    assert parse_duration_ms("soon") is None
    assert parse_duration_ms("") is None


def test_endpoint_rpm_limit_refuses_with_the_wait() -> None:
    clock = Clock()
    endpoints = [EndpointConfig(id="only", api_key="k", rpm_limit=2)]
    _, admission = make_router(clock, endpoints=endpoints)
    lim = admission.endpoint("only", "m")
    assert admission.admit_endpoint(lim, 1, clock.ms) == 0
    clock.ms += 10_000
    assert admission.admit_endpoint(lim, 1, clock.ms) == 0
    wait = admission.admit_endpoint(lim, 1, clock.ms)
    assert 49_000 <= wait <= 51_000  # the first request leaves the 60 s window 50 s from now


def test_endpoint_status_reports_utilisation() -> None:
    clock = Clock()
    router, admission = make_router(clock, strategy="least_used")
    for i in range(6):
        send(router, admission, request(10, f"q{i}"))
    rows = {r["endpoint_id"]: r for r in admission.endpoint_status()}
    assert set(rows) == {"e0", "e1", "e2"}
    assert all(r["requests_in_window"] == 2 and r["utilisation"] == 0.02 for r in rows.values())


def test_a_429s_retry_after_bounds_the_full_window_reset() -> None:
    """OpenAI and Anthropic refill continuously: after a 429 with `retry-after: 2`, a
    `x-ratelimit-reset-requests: 1m0s` is when the window is full, not when the next request goes."""
    view = UpstreamView()
    headers = {
        "x-ratelimit-limit-requests": "100",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "1m0s",
        "retry-after": "2",
    }
    assert parse_headers(headers, view, 10_000, 0.0)
    assert view.reset_at_ms == 12_000
    admission = Admission(window_s=60, default_rpm=0, default_tpm=0, clock=lambda: 10_000)
    lim = admission.endpoint("e1", "m")
    admission.observe(lim, headers, 10_000)
    assert admission.upstream_wait(lim, 10_000) == 2_000
    assert admission.upstream_wait(lim, 12_000) == 0
    del headers["retry-after"]  # no explicit word: the window's reset stands
    assert parse_headers(headers, view, 10_000, 0.0)
    assert view.reset_at_ms == 70_000
