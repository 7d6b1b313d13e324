"""Start the fake upstream once per session as a subprocess on a free port."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, TypeVar

import pytest

from ensemble.fake_upstream.client import FakeUpstreamProcess

Fake = FakeUpstreamProcess
T = TypeVar("T")
_OPEN_CLIENTS: list[Any] = []


def track(client: T) -> T:
    """Register an SDK client to be closed after the test (unclosed sockets warn, and warnings fail)."""
    _OPEN_CLIENTS.append(client)
    return client


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _OPEN_CLIENTS:
        _OPEN_CLIENTS.pop().close()


def start_fake(*extra: str) -> FakeUpstreamProcess:
    """A separate fake with CLI flags (``--chunks 5`` …); the caller stops it."""
    opts = dict(zip(extra[::2], extra[1::2], strict=True))
    return FakeUpstreamProcess(
        chunks=int(opts.get("--chunks", 20)),
        latency_ms=float(opts.get("--latency-ms", 0)),
        chunk_gap_ms=float(opts.get("--chunk-gap-ms", 0)),
    ).start()


@pytest.fixture(scope="session")
def fake_server() -> Iterator[FakeUpstreamProcess]:
    with FakeUpstreamProcess() as fake:
        yield fake


@pytest.fixture
def fake(fake_server: FakeUpstreamProcess) -> FakeUpstreamProcess:
    fake_server.reset()
    return fake_server
