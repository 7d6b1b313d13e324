"""Connecting to the shared Redis/Valkey of a scaled-out deployment (see docs/scale-out.md).

`redis.address` is `host:port`, `redis://…` or `rediss://…` (TLS). The namespace that prefixes
every key is `redis.namespace` (the loader puts `REDIS_NAMESPACE` there), else
`ENSEMBLE_ENVIRONMENT`, else `default`, so staging and production can share one server.

`RedisHealth` is the one status object the sync tasks report into and /admin/status reads: Redis
being down or slow is logged once per outage (not once per failed call) and never fails a request.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.retry
import redis.retry
from redis.backoff import NoBackoff

from ensemble.config.schema import RedisConfig

log = logging.getLogger("ensemble.redis")

# Every Redis call of a background task is bounded: a slow Redis is treated as a down one.
COMMAND_TIMEOUT = 0.5
CONNECT_TIMEOUT = 0.5


def namespace(config: RedisConfig) -> str:
    return config.namespace or os.environ.get("ENSEMBLE_ENVIRONMENT", "") or "default"


def display_address(address: str) -> str:
    """The address without credentials a URL may carry (for logs and /admin/status)."""
    rest = address.split("://", 1)[-1]
    return rest.rsplit("@", 1)[-1]


def _url(config: RedisConfig) -> str:
    address = config.address
    return address if "://" in address else f"redis://{address}"


def _options(config: RedisConfig) -> dict[str, Any]:
    return {
        "username": config.username or None,
        "password": config.password or None,
        "db": config.database,
        "socket_timeout": COMMAND_TIMEOUT,
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "max_connections": max(2, config.pool_size),
        "health_check_interval": 10,
    }


def connect(config: RedisConfig) -> redis.asyncio.Redis:
    """A pooled asyncio client; connecting is lazy, so this never blocks or fails at start-up."""
    # No retries inside a call: the next sync round is the retry, and a request never waits on it.
    return redis.asyncio.Redis.from_url(
        _url(config), retry=redis.asyncio.retry.Retry(NoBackoff(), 0), **_options(config)
    )


def connect_sync(config: RedisConfig) -> redis.Redis:
    """A blocking client for the CLI (`ensemble keys create|revoke` publish through it)."""
    return redis.Redis.from_url(_url(config), retry=redis.retry.Retry(NoBackoff(), 1), **_options(config))


@dataclass
class RedisHealth:
    """Shared-state health of one worker, as /admin/status shows it."""

    address: str
    namespace: str
    connected: bool = False
    since: float = field(default_factory=time.time)
    last_ok: float = 0.0
    last_error: str = ""
    failures: int = 0
    components: dict[str, bool] = field(default_factory=dict)

    def ok(self, component: str) -> None:
        self.components[component] = True
        self.last_ok = time.time()
        if not self.connected and all(self.components.values()):
            if self.failures:
                log.warning("redis %s is reachable again; shared state sync resumed", self.address)
            self.connected = True
            self.since = time.time()

    def failed(self, component: str, error: BaseException) -> None:
        self.components[component] = False
        self.failures += 1
        self.last_error = f"{type(error).__name__}: {error}"[:300]
        if self.connected or self.failures == 1:
            log.warning(
                "redis %s unreachable (%s: %s); serving on local rate limits and the last known key "
                "table until it returns",
                self.address,
                component,
                self.last_error,
            )
            self.connected = False
            self.since = time.time()

    def view(self) -> dict[str, Any]:
        return {
            "configured": True,
            "address": self.address,
            "namespace": self.namespace,
            "state": "connected" if self.connected else "degraded",
            "since": round(self.since, 3),
            "last_ok": round(self.last_ok, 3) if self.last_ok else None,
            "last_error": self.last_error or None,
            "failures": self.failures,
            "components": dict(self.components),
        }
