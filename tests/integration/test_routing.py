"""Routing and rate limits (see docs/routing.md) end to end: a real `ensemble serve` in front of several virtual
endpoints of the fake upstream. One gateway for the module; each scenario has its own model (and
so its own counters, cool-downs and affinity entries) so the tests do not disturb each other."""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.ensemble import MOCK_PROVIDER, Ensemble
from support.fake import FakeUpstream
from support.processes import free_port
from support.waiting import wait_until

pytestmark = pytest.mark.integration

WINDOW_S = 6  # rate-limit window: short, so a test can wait out a Retry-After
UPSTREAM_KEY = "sk-test-upstream-key-000000"
PRICING = {"input": 3.0, "output": 15.0, "cache_read": 0.3, "cache_write": 3.75}


def provider(
    name: str, endpoints: list[dict[str, Any]], models: list[str], priority: int = 1, **extra: Any
) -> dict[str, Any]:
    return {
        "name": name,
        "type": "openai",
        "base_url": "http://unused.invalid",
        "priority": priority,
        "endpoints": [{"api_key": UPSTREAM_KEY, **e} for e in endpoints],
        "models": [
            {"name": m, "upstream": "gpt-4o", "max_output_tokens": 4096, "pricing": PRICING} for m in models
        ],
        **extra,
    }


@pytest.fixture(scope="module")
def gateway(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ensemble]:
    def ep(eid: str, **kw: Any) -> dict[str, Any]:
        return {"id": eid, "base_url": fake.endpoint_url(eid), **kw}

    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: connection refused
    providers = [
        MOCK_PROVIDER,
        # Failover inside a pool (round robin starts at the first endpoint).
        provider("pool", [ep("pool-1"), ep("pool-2")], ["pool-model"], strategy="round_robin"),
        # Failover to the next provider, one model per failure kind.
        *[
            p
            for kind in ("529", "500", "refused", "timeout")
            for p in (
                provider(
                    f"bad-{kind}",
                    [{"id": f"bad-{kind}", "base_url": dead} if kind == "refused" else ep(f"bad-{kind}")],
                    [f"fo-{kind}"],
                    priority=1,
                ),
                provider(f"good-{kind}", [ep(f"good-{kind}")], [f"fo-{kind}"], priority=2),
            )
        ],
        # Exhaustion: endpoint RPM limits, and upstream 429s everywhere.
        provider(
            "tiny",
            [ep("tiny-1", rpm_limit=1), ep("tiny-2", rpm_limit=1)],
            ["tiny-model"],
            strategy="least_used",
        ),
        provider("busy", [ep("busy-1"), ep("busy-2")], ["busy-model"]),
        provider("small", [ep("small-1", tpm_limit=500), ep("small-2", tpm_limit=800)], ["small-model"]),
        # Capacity the provider reports in its headers.
        provider("hdr-a", [ep("hdr-1")], ["hdr-model"], priority=1),
        provider("hdr-b", [ep("hdr-2")], ["hdr-model"], priority=2),
        # Cache affinity: three endpoints of one pool.
        provider("aff", [ep("aff-1"), ep("aff-2"), ep("aff-3")], ["aff-model"]),
        provider("cheap", [ep("cheap-1"), ep("cheap-2"), ep("cheap-3")], ["aff-low"]),
        # The routing decision in the request log: affinity, then failover away from it.
        provider("logged", [ep("log-1"), ep("log-2")], ["log-model"]),
    ]
    server = Ensemble(
        Path(tmp_path_factory.mktemp("routing")),
        providers=providers,
        config={
            "rate_limit": {"window_size": f"{WINDOW_S}s"},
            # A provider that does not answer within 2 s counts as failed (and is failed over).
            # Cache affinity runs on the shipped thresholds.
            "provider_timeouts": {"default": "2s"},
        },
    )
    yield server
    server.stop()


def chat(model: str, text: str = "hello", system: str | None = None) -> dict[str, Any]:
    messages = [{"role": "user", "content": text}]
    if system is not None:
        messages.insert(0, {"role": "system", "content": system})
    return {"model": model, "messages": messages, "max_tokens": 16}


def endpoints_hit(fake: FakeUpstream, endpoint: str) -> int:
    return len(fake.requests(endpoint))


# -- per-key limits ----------------------------------------------------------------------------


def test_key_rpm_gives_exactly_n_then_429_with_retry_after(gateway: Ensemble) -> None:
    key = gateway.create_key("rpm3", "--rpm", "3")
    gateway.wait_for_key(key)
    with gateway.client(key) as c:
        # wait_for_key used /models, which is not rate limited: all 3 requests are still available.
        started = time.monotonic()  # every admitted request was counted after this
        statuses = [c.post("/api/v1/generate", json=chat("mock-1")).status_code for _ in range(3)]
        first_ok = time.monotonic()
        assert statuses == [200, 200, 200]
        r = c.post("/api/v1/generate", json=chat("mock-1"))
        assert r.status_code == 429, r.text
        assert r.json()["error"]["type"] == "rate_limited"
        assert r.json()["error"]["code"] == "key_rate_limited"
        retry_after = int(r.headers["retry-after"])
        # The oldest request leaves the window WINDOW_S after it was made.
        assert 1 <= retry_after <= WINDOW_S
        assert r.headers["x-ratelimit-limit-requests"] == "3"
        assert r.headers["x-ratelimit-remaining-requests"] == "0"
        # Still refused just before, admitted once Retry-After has passed (the waits are the
        # behaviour under test: time passing is what frees the window).
        time.sleep(max(retry_after - 1.5, 0))
        if time.monotonic() - started < WINDOW_S - 1:
            assert c.post("/api/v1/generate", json=chat("mock-1")).status_code == 429
        time.sleep(max(retry_after - (time.monotonic() - first_ok), 0) + 0.3)
        assert c.post("/api/v1/generate", json=chat("mock-1")).status_code == 200


# -- failover ----------------------------------------------------------------------------------


def test_endpoint_answering_429_is_skipped_within_the_pool(gateway: Ensemble, fake: FakeUpstream) -> None:
    fake.enqueue("pool-1", {"status": 429, "retry_after": 30})
    with gateway.client() as c:
        r = c.post("/api/v1/generate", json=chat("pool-model"))
        assert r.status_code == 200, r.text
        assert r.headers["x-ensemble-endpoint"] == "pool-2"
        assert r.headers["x-ensemble-route-reason"] == "failover"
        assert endpoints_hit(fake, "pool-1") == 1
        # pool-1 is cooling down for the 30 s it asked for: later requests do not touch it.
        for _ in range(3):
            r = c.post("/api/v1/generate", json=chat("pool-model"))
            assert r.status_code == 200 and r.headers["x-ensemble-endpoint"] == "pool-2"
    assert endpoints_hit(fake, "pool-1") == 1
    assert endpoints_hit(fake, "pool-2") == 4


@pytest.mark.parametrize("kind", ["529", "500", "refused", "timeout"])
def test_failing_endpoint_is_skipped_for_the_next_provider(
    gateway: Ensemble, fake: FakeUpstream, kind: str
) -> None:
    if kind == "timeout":
        fake.enqueue(f"bad-{kind}", {"stall_before_first_byte_ms": 4000})
    elif kind != "refused":
        fake.enqueue(f"bad-{kind}", {"status": int(kind)})
    with gateway.client() as c:
        r = c.post("/api/v1/generate", json=chat(f"fo-{kind}"))
        assert r.status_code == 200, r.text
        assert r.headers["x-ensemble-provider"] == f"good-{kind}"
        assert r.headers["x-ensemble-endpoint"] == f"good-{kind}"
        assert r.headers["x-ensemble-route-reason"] == "failover"
        # A 529 cools the endpoint down at once (the provider said so); a single 500 or timeout
        # does not (cooldown_after_failures: 3), so the next request goes back to it and, the fault
        # having passed, succeeds there. Refused connections fail over every time.
        stays_away = kind in ("529", "refused")
        with c.stream("POST", "/api/v1/stream", json={**chat(f"fo-{kind}"), "stream": True}) as s:
            assert s.status_code == 200
            assert s.headers["x-ensemble-endpoint"] == (f"good-{kind}" if stays_away else f"bad-{kind}")
            assert "event: done" in s.read().decode()
    if kind != "refused":
        assert endpoints_hit(fake, f"bad-{kind}") == (1 if stays_away else 2)
    assert endpoints_hit(fake, f"good-{kind}") == (2 if stays_away else 1)


def test_repeated_failures_cool_the_endpoint_down(gateway: Ensemble, fake: FakeUpstream) -> None:
    fake.enqueue("bad-500", {"status": 500, "count": 3})
    bad_before, good_before = endpoints_hit(fake, "bad-500"), endpoints_hit(fake, "good-500")
    with gateway.client() as c:
        for _ in range(3):  # each fails over; the third failure in a row starts a 2 s cool-down
            r = c.post("/api/v1/generate", json=chat("fo-500"))
            assert r.status_code == 200 and r.headers["x-ensemble-endpoint"] == "good-500"
        r = c.post("/api/v1/generate", json=chat("fo-500"))
        assert r.status_code == 200 and r.headers["x-ensemble-endpoint"] == "good-500"
    assert endpoints_hit(fake, "bad-500") - bad_before == 3  # the fourth never reached it
    assert endpoints_hit(fake, "good-500") - good_before == 4


def test_other_4xx_is_passed_through_without_failover(gateway: Ensemble, fake: FakeUpstream) -> None:
    fake.enqueue("bad-500", {"status": 400, "message": "bad things"})
    before = endpoints_hit(fake, "good-500")
    with gateway.client() as c:
        # bad-500 may still be cooling down from the repeated-failures test (2 s): wait it out.
        wait_until(lambda: gateway.provider_health("bad-500") == "healthy", what="bad-500 cooled down")
        r = c.post("/api/v1/generate", json=chat("fo-500"))
    assert r.status_code == 400, r.text  # the provider's status, returned as is
    assert "bad things" in r.json()["error"]["message"]
    assert endpoints_hit(fake, "good-500") == before


# -- exhaustion --------------------------------------------------------------------------------


def test_all_endpoints_at_their_rpm_limit_gives_429(gateway: Ensemble, fake: FakeUpstream) -> None:
    with gateway.client() as c:
        served = []
        for _ in range(2):
            r = c.post("/api/v1/generate", json=chat("tiny-model"))
            assert r.status_code == 200, r.text
            served.append(r.headers["x-ensemble-endpoint"])
        start = time.monotonic()
        assert sorted(served) == ["tiny-1", "tiny-2"]  # least used: one each
        r = c.post("/api/v1/generate", json=chat("tiny-model"))
        assert r.status_code == 429, r.text
        assert r.json()["error"]["code"] == "all_endpoints_exhausted"
        assert "x-ratelimit-remaining-requests" in r.headers  # the caller's own key limits
        retry_after = int(r.headers["retry-after"])
        assert 1 <= retry_after <= WINDOW_S
        # Nothing was sent upstream for the refused request.
        assert endpoints_hit(fake, "tiny-1") + endpoints_hit(fake, "tiny-2") == 2
        # The behaviour under test: admitted once the advertised Retry-After has passed.
        time.sleep(max(retry_after - (time.monotonic() - start), 0) + 0.3)
        assert c.post("/api/v1/generate", json=chat("tiny-model")).status_code == 200


def test_all_endpoints_answering_429_gives_429_with_soonest_retry(
    gateway: Ensemble, fake: FakeUpstream
) -> None:
    fake.enqueue("busy-1", {"status": 429, "retry_after": 9})
    fake.enqueue("busy-2", {"status": 429, "retry_after": 4})
    with gateway.client() as c:
        r = c.post("/api/v1/generate", json=chat("busy-model"))
        assert r.status_code == 429, r.text
        assert r.headers["retry-after"] == "4"
        assert endpoints_hit(fake, "busy-1") == endpoints_hit(fake, "busy-2") == 1
        # Both cool down now: the next request is refused without calling either, same deadline.
        r = c.post("/api/v1/generate", json=chat("busy-model"))
        assert r.status_code == 429
        assert 1 <= int(r.headers["retry-after"]) <= 4  # the same deadline, now a little closer
        assert endpoints_hit(fake, "busy-1") == endpoints_hit(fake, "busy-2") == 1


def test_provider_rate_limit_headers_steer_away_from_an_exhausted_endpoint(
    gateway: Ensemble, fake: FakeUpstream
) -> None:
    # hdr-1 answers fine but says (x-ratelimit-remaining-requests: 0) it has nothing left this minute.
    fake.configure("hdr-1", ratelimit_remaining_requests=0)
    with gateway.client() as c:
        r = c.post("/api/v1/generate", json=chat("hdr-model"))
        assert r.status_code == 200 and r.headers["x-ensemble-endpoint"] == "hdr-1"
        for _ in range(3):
            r = c.post("/api/v1/generate", json=chat("hdr-model"))
            assert r.status_code == 200, r.text
            assert r.headers["x-ensemble-endpoint"] == "hdr-2"
            assert r.headers["x-ensemble-route-reason"] == "failover"
    assert endpoints_hit(fake, "hdr-1") == 1  # never called again before its reported reset


def test_request_larger_than_every_endpoint_tpm_is_a_400(gateway: Ensemble, fake: FakeUpstream) -> None:
    with gateway.client() as c:
        r = c.post("/api/v1/generate", json={**chat("small-model"), "max_tokens": 1000})
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] == "exceeds_token_limit"
        assert "max_tokens" in r.json()["error"]["message"]
        # One that fits the larger endpoint goes there.
        r = c.post("/api/v1/generate", json={**chat("small-model"), "max_tokens": 700})
        assert r.status_code == 200 and r.headers["x-ensemble-endpoint"] == "small-2"
    assert endpoints_hit(fake, "small-1") == 0


# -- cache affinity ----------------------------------------------------------------------------


def long_system(tag: str) -> str:
    # ~5,000 tokens: a cache hit saves nearly all of the input cost, far above the high threshold.
    return f"[{tag}] You are a meticulous assistant. " + ("Follow the style guide carefully. " * 600)


def test_same_session_sticks_to_one_endpoint(gateway: Ensemble) -> None:
    system = long_system("session")
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}]
    served = []
    reasons = []
    with gateway.client() as c:
        c.headers["x-session-id"] = "sess-42"
        for turn in range(6):
            messages.append({"role": "user", "content": f"question {turn}"})
            r = c.post(
                "/api/v1/generate", json={"model": "aff-model", "messages": messages, "max_tokens": 16}
            )
            assert r.status_code == 200, r.text
            served.append(r.headers["x-ensemble-endpoint"])
            reasons.append(r.headers["x-ensemble-route-reason"])
            messages.append({"role": "assistant", "content": r.json()["content"]})
    assert len(set(served)) == 1, served
    assert reasons[0] == "least_used"
    assert set(reasons[1:]) == {"affinity_high_value"}


def test_same_prompt_prefix_sticks_without_session(gateway: Ensemble) -> None:
    system = long_system("prefix")
    with gateway.client() as c:
        served = []
        for i in range(6):
            # Different users, same long system prompt: the provider has that prefix cached.
            r = c.post("/api/v1/generate", json=chat("aff-model", f"user {i} asks", system=system))
            assert r.status_code == 200, r.text
            served.append(r.headers["x-ensemble-endpoint"])
    assert len(set(served)) == 1, served


def test_low_value_requests_spread_by_utilisation(gateway: Ensemble) -> None:
    served: Counter[str] = Counter()
    with gateway.client() as c:
        c.headers["x-session-id"] = "cheap-session"
        for i in range(9):
            # A short prompt is below any provider's cache minimum: affinity is worth nothing.
            r = c.post("/api/v1/generate", json=chat("aff-low", f"short question {i}", system="Be brief."))
            assert r.status_code == 200, r.text
            assert r.headers["x-ensemble-route-reason"] == "least_used"
            served[r.headers["x-ensemble-endpoint"]] += 1
    assert served == {"cheap-1": 3, "cheap-2": 3, "cheap-3": 3}


def test_unknown_model_is_a_404_without_a_route(gateway: Ensemble) -> None:
    with gateway.client() as c:
        r = c.post("/api/v1/generate", json=chat("no-such-model"))
    assert r.status_code == 404
    assert "x-ensemble-route-reason" not in r.headers


def test_stream_reports_route_reason(gateway: Ensemble) -> None:
    with (
        gateway.client() as c,
        c.stream("POST", "/api/v1/stream", json={**chat("aff-low"), "stream": True}) as s,
    ):
        assert s.status_code == 200
        assert s.headers["x-ensemble-route-reason"] in ("least_used", "affinity", "affinity_high_value")
        s.read()


# -- the routing decision in the request log ---------------------------------------------------


def logged_routes(gateway: Ensemble, request_ids: list[str]) -> dict[str, tuple[str, str, float, float]]:
    """(endpoint_id, route_reason, cache_value_usd, cost_penalty_usd) per request, once the
    server's batched writer has flushed them to SQLite."""
    deadline = time.monotonic() + 10
    while True:
        with sqlite3.connect(gateway.dir / "data" / "ensemble.db") as db:
            rows = db.execute(
                "SELECT request_id, endpoint_id, route_reason, cache_value_usd, cost_penalty_usd "
                f"FROM request_log WHERE request_id IN ({','.join('?' * len(request_ids))})",
                request_ids,
            ).fetchall()
        if len(rows) == len(request_ids) or time.monotonic() > deadline:
            return {r[0]: tuple(r[1:]) for r in rows}
        time.sleep(0.1)


def test_route_decision_is_logged_with_the_request(gateway: Ensemble, fake: FakeUpstream) -> None:
    system = long_system("logged")
    tokens = len(f"s{system}\0uq\0".encode()) // 4  # the gateway's estimate of the cached prefix
    # Dollars saved: a miss elsewhere would write the prefix at cache_write, a hit reads it.
    value = tokens * (3.75 - 0.30) / 1_000_000
    with gateway.client() as c:
        c.headers["x-session-id"] = "logged-session"
        ids, endpoints, reasons = [], [], []
        for i in range(3):
            if i == 2:  # the affinity endpoint is rate limited: fail over, losing the cache hit
                fake.enqueue(endpoints[0], {"status": 429, "retry_after": 30})
            r = c.post("/api/v1/generate", json=chat("log-model", "q", system=system))
            assert r.status_code == 200, r.text
            ids.append(r.headers["x-request-id"])
            endpoints.append(r.headers["x-ensemble-endpoint"])
            reasons.append(r.headers["x-ensemble-route-reason"])
    assert reasons == ["least_used", "affinity_high_value", "failover"]
    first, other = endpoints[0], ({"log-1", "log-2"} - {endpoints[0]}).pop()
    assert endpoints == [first, first, other]
    rows = logged_routes(gateway, ids)
    assert rows[ids[0]] == (first, "least_used", 0.0, 0.0)  # nothing remembered yet
    endpoint, reason, cache_value, penalty = rows[ids[1]]
    assert (endpoint, reason, penalty) == (first, "affinity_high_value", 0.0)
    assert cache_value == pytest.approx(value)
    endpoint, reason, cache_value, penalty = rows[ids[2]]
    assert (endpoint, reason) == (other, "failover")
    assert cache_value == pytest.approx(value) and penalty == pytest.approx(value)
