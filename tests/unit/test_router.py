"""Router and endpoint admission on a fake clock: strategies, weights, cache affinity and its dollar
thresholds, TTL and LRU bounds, cool-downs, and the provider's rate-limit headers."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

from ensemble.config.durations import Duration
from ensemble.config.schema import CacheConfig, EndpointConfig, ModelConfig, Pricing, ProviderConfig
from ensemble.providers.mock import MockProvider
from ensemble.ratelimit import Admission, UpstreamView, parse_headers
from ensemble.ratelimit.upstream import parse_duration_ms
from ensemble.router import Router
from ensemble.types import InferenceRequest, Message

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
    **cache: object,
) -> tuple[Router, Admission]:
    cfg = ProviderConfig(
        name="anthropic",
        type="anthropic",
        strategy=strategy,  # type: ignore[arg-type]
        endpoints=endpoints or [EndpointConfig(id=f"e{i}", api_key="k", rpm_limit=100) for i in range(3)],
        models=[ModelConfig(name="m", pricing=PRICING)],
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


def test_high_value_prefix_sticks_even_when_busier() -> None:
    clock = Clock()
    router, admission = make_router(clock, low_value_threshold=0.001, high_value_threshold=0.01)
    first = send(router, admission, request(8000, "a"))  # 8000 * 2.7e-6 = $0.0216 > high
    fill(admission, router, first, 60)  # now by far the busiest
    plan = router.plan("m", request(8000, "b"))
    assert plan.candidates[0].target.endpoint.id == first
    assert plan.decision.reason == "affinity_high_value"
    assert abs(plan.decision.cache_value - 8000 * 2.7e-6) < 1e-9


def test_medium_value_sticks_until_the_endpoint_is_too_busy() -> None:
    clock = Clock()
    # 2000 tokens save $0.0054: halfway between the thresholds, allowance 0.5 * 0.8 = 0.4 utilisation.
    router, admission = make_router(clock, low_value_threshold=0.0024, high_value_threshold=0.0084)
    first = send(router, admission, request(2000, "a"))
    fill(admission, router, first, 30)  # 31% of its 100 rpm, others at 0%: within the allowance
    plan = router.plan("m", request(2000, "b"))
    assert plan.candidates[0].target.endpoint.id == first and plan.decision.reason == "affinity"
    fill(admission, router, first, 20)  # 51%: beyond it
    plan = router.plan("m", request(2000, "c"))
    assert plan.candidates[0].target.endpoint.id != first
    assert plan.decision.reason == "least_used"
    assert plan.decision.cost_penalty == plan.decision.cache_value > 0
    assert router.stats()["overridden_busy"] == 1


def test_low_value_ignores_affinity() -> None:
    clock = Clock()
    router, admission = make_router(clock)  # defaults: low $0.05 = 18.5k tokens at these prices
    first = send(router, admission, request(4000, "a", session="s"))
    fill(admission, router, first, 1)
    plan = router.plan("m", request(4000, "b", session="s"))
    assert plan.candidates[0].target.endpoint.id != first
    assert plan.decision.reason == "least_used"
    assert router.stats()["ignored_low_value"] == 1


def test_affinity_expires_with_the_provider_ttl_and_is_lru_bounded() -> None:
    clock = Clock()
    router, admission = make_router(
        clock,
        low_value_threshold=0.0,
        high_value_threshold=0.001,
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
