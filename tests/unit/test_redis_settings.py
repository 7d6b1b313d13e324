"""Redis settings that never need a server: namespace choice and what may be shown of an address."""

from __future__ import annotations

import pytest

from ensemble.config.schema import RedisConfig
from ensemble.storage.redis import display_address, namespace


def test_namespace_prefers_config_then_environment_then_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENSEMBLE_ENVIRONMENT", "staging")
    assert namespace(RedisConfig(namespace="team-a")) == "team-a"
    assert namespace(RedisConfig()) == "staging"
    monkeypatch.delenv("ENSEMBLE_ENVIRONMENT")
    assert namespace(RedisConfig()) == "default"


@pytest.mark.parametrize(
    ("address", "shown"),
    [
        ("127.0.0.1:6379", "127.0.0.1:6379"),
        ("redis://user:s3cret@cache.internal:6380/0", "cache.internal:6380/0"),
        ("rediss://:p@ss@host:6379", "host:6379"),
        ("", ""),
    ],
)
def test_display_address_drops_credentials(address: str, shown: str) -> None:
    assert display_address(address) == shown
