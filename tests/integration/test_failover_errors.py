"""The gateway's protection against a failing upstream (see docs/routing.md), end to end: a real `ensemble
serve` in front of single-endpoint providers on the fake upstream. Each test has its own provider,
endpoint and model, so no test inherits another's failure count or cool-down."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.ensemble import Ensemble, openai_provider
from support.fake import FakeUpstream

pytestmark = pytest.mark.integration

# (provider / endpoint / model name, cooldown_after_failures; None = the default, 3)
LANES: list[tuple[str, int | None]] = [("failing", None), ("resets", None), ("never", 0)]


@pytest.fixture(scope="module")
def gateway(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ensemble]:
    providers = []
    for name, threshold in LANES:
        extra: dict[str, Any] = {} if threshold is None else {"cooldown_after_failures": threshold}
        providers.append(
            openai_provider(fake.endpoint_url(name), name=name, models=[f"{name}-model"], **extra)
        )
    server = Ensemble(Path(tmp_path_factory.mktemp("failover-errors")), providers=providers)
    yield server
    server.stop()


def generate(c: httpx.Client, model: str) -> httpx.Response:
    return c.post(
        "/api/v1/generate",
        json={"model": model, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 16},
    )


def assert_upstream_500_passed_on(r: httpx.Response) -> None:
    """A single upstream 500 with no other endpoint to fail over to: the client gets a 502."""
    assert r.status_code == 502, r.text
    error = r.json()["error"]
    assert (
        error["type"] == "provider_error" and "every endpoint serving this model failed" in error["message"]
    )
    assert "retry-after" not in r.headers


def test_repeated_failures_give_503_all_endpoints_failing_then_recover(
    gateway: Ensemble, fake: FakeUpstream
) -> None:
    fake.enqueue("failing", {"status": 500, "count": 3})
    with gateway.client() as c:
        for _ in range(3):
            assert_upstream_500_passed_on(generate(c, "failing-model"))
        cooled_at = time.monotonic()
        assert len(fake.requests("failing")) == 3

        # The third failure in a row cooled the only endpoint down for 2 s: the gateway answers
        # itself, without calling the upstream. (Its Retry-After is the time left rounded up to
        # whole seconds, counting one millisecond more: not in the cool-down's first millisecond.)
        time.sleep(0.01)
        r = generate(c, "failing-model")
        assert r.status_code == 503, r.text
        error = r.json()["error"]
        assert error["type"] == "overloaded" and error["code"] == "all_endpoints_failing"
        assert "cooling down after repeated upstream failures" in error["message"]
        retry_after = int(r.headers["retry-after"])
        assert retry_after == 2
        assert len(fake.requests("failing")) == 3

        # Once the cool-down has passed the endpoint is tried again, and it answers (the wait is the
        # behaviour under test).
        time.sleep(max(retry_after - (time.monotonic() - cooled_at), 0) + 0.1)
        r = generate(c, "failing-model")
        assert r.status_code == 200, r.text
        assert r.json()["provider"] == "failing"
        assert len(fake.requests("failing")) == 4


def test_a_success_resets_the_failure_count(gateway: Ensemble, fake: FakeUpstream) -> None:
    fake.enqueue("resets", {"status": 500, "count": 2}, {}, {"status": 500, "count": 2})
    with gateway.client() as c:
        statuses = [generate(c, "resets-model").status_code for _ in range(6)]
    # Never 3 failures in a row: no cool-down, every request reached the upstream.
    assert statuses == [502, 502, 200, 502, 502, 200]
    assert len(fake.requests("resets")) == 6


def test_cooldown_after_failures_0_never_cools_the_endpoint(gateway: Ensemble, fake: FakeUpstream) -> None:
    fake.enqueue("never", {"status": 500, "count": 5})
    with gateway.client() as c:
        for _ in range(5):
            assert_upstream_500_passed_on(generate(c, "never-model"))
        assert generate(c, "never-model").status_code == 200
    assert len(fake.requests("never")) == 6
