"""The upstream clients run inside the server on uvloop, whose transports differ from asyncio's:
every async test here runs on both loops."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

import pytest
import uvloop

from support.tls import local_ca, tls_fake  # noqa: F401  (fixtures for the TLS tests)


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
