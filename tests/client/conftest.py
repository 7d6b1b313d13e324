"""One Ensemble (mock provider + OpenAI-format lanes on the fake upstream) for the client tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from client.stack import FakeClock, Stack, Upstream
from support.client_lanes import lane_providers
from support.ensemble import MOCK_PROVIDER, Ensemble
from support.fake import FakeUpstream


@pytest.fixture(scope="package")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    fake = FakeUpstream()
    try:  # a gateway that fails to start must not leave the fake upstream running
        gateway = Ensemble(
            Path(tmp_path_factory.mktemp("client")), providers=[MOCK_PROVIDER, *lane_providers(fake)]
        )
        try:
            yield Stack(gateway, fake)
        finally:
            gateway.stop()
    finally:
        fake.stop()


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def upstream(stack: Stack) -> Upstream:
    """A fresh endpoint whose provider never cools down after failures: the client's own retries
    and breaker are what the test sees."""
    return stack.take()


@pytest.fixture
def guarded(stack: Stack) -> Upstream:
    """A fresh endpoint with the gateway's default protection (cool-down after 3 failures in a row)."""
    return stack.take(guarded=True)
