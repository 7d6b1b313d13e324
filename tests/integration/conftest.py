from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support.ensemble import Ensemble
from support.fake import FakeUpstream


@pytest.fixture(scope="module")
def mock_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ensemble]:
    """One Ensemble on the mock provider, shared by a test module."""
    server = Ensemble(Path(tmp_path_factory.mktemp("ensemble")))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    """One fake upstream server per test module (a module that needs another kind defines its own)."""
    upstream = FakeUpstream()
    yield upstream
    upstream.stop()
