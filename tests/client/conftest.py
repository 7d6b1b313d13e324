"""One Ensemble (mock provider + an OpenAI-format provider on the fake upstream) for the client tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from client.stack import FAKE_ENDPOINT, FAKE_MODEL, FakeClock, Stack
from support.ensemble import MOCK_PROVIDER, Ensemble, openai_provider
from support.fake import FakeUpstream


@pytest.fixture(scope="package")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    fake = FakeUpstream()
    try:  # a gateway that fails to start must not leave the fake upstream running
        provider = openai_provider(fake.endpoint_url(FAKE_ENDPOINT), name="fake", models=[FAKE_MODEL])
        gateway = Ensemble(Path(tmp_path_factory.mktemp("client")), providers=[MOCK_PROVIDER, provider])
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
def upstream(stack: Stack) -> Iterator[Stack]:
    """The stack with the fake endpoint's queue and recordings cleared before and after a test."""
    stack.fake.http.post("/_fake/reset", json={"endpoint": FAKE_ENDPOINT}).raise_for_status()
    yield stack
    stack.fake.http.post("/_fake/reset", json={"endpoint": FAKE_ENDPOINT}).raise_for_status()
