"""Suite-wide rule: a test that starts a subprocess (a server, redis-server, moto, the CLI) is marked
`integration`, so `make test-quick` (`-m "not integration"`) is the in-process unit layer. The rule
is enforced, not hoped for: an unmarked test that starts one fails and says so."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import pytest

_running: pytest.Item | None = None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    """Remember which test is running (setup, call and teardown: module fixtures start in setup)."""
    global _running
    _running = item
    try:
        return (yield)
    finally:
        _running = None


def _refuse_unmarked_subprocesses(event: str, args: tuple[Any, ...]) -> None:
    if event != "subprocess.Popen" or _running is None:
        return
    if _running.get_closest_marker("integration") is None:
        raise RuntimeError(
            f"{_running.nodeid} starts a subprocess ({args[1]!r}) but is not marked integration: add "
            "`pytestmark = pytest.mark.integration` to its module (see docs/development.md#tests)"
        )


sys.addaudithook(_refuse_unmarked_subprocesses)


@pytest.fixture(autouse=True)
def upstream_conformance(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test whose upstream requests (to any fake upstream) the real provider would refuse:
    checked against the official SDKs' request types and the documented per-model rules
    (tests/support/conformance.py). A test that sends a refused body on purpose is marked
    `nonconforming_upstream`."""
    yield
    from support import fake

    found = [p for upstream in list(fake.LIVE) for p in upstream.conformance_problems()]
    found, fake.UNCHECKED[:] = found + fake.UNCHECKED, []
    if found and request.node.get_closest_marker("nonconforming_upstream") is None:
        pytest.fail(
            "upstream requests the real API would refuse:\n  " + "\n  ".join(found[:20]), pytrace=False
        )
