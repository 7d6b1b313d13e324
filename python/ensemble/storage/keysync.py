"""API-key sync between instances through Redis (see docs/scale-out.md).

Instances do not share SQLite, so with Redis configured the key records travel through it:

* `{ns}:keys` — a hash, SHA-256 digest (hex) → the JSON key record. It is the source of truth for
  every instance: a restarted (or newly added) instance loads the whole table from it.
* `{ns}:keys:changed` — a pub/sub channel; every create/update/disable/revoke publishes the new
  record there, and every instance applies it at once (well within the one second docs/scale-out.md promises).

Writers (the CLI, the admin API) call `publish()` / `publish_sync()`: HSET and PUBLISH in one
MULTI, so a subscriber never sees a change the hash does not hold. A subscriber that lost its
connection may have missed messages, so after every (re)subscribe it reloads the whole hash.

Keys that exist only in an instance's local SQLite (created before Redis was configured) are copied
to Redis with HSETNX at start-up: a record Redis already has (perhaps revoked since) always wins.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable

import msgspec
import redis
import redis.asyncio

from ensemble.storage.keys import KeyRecord
from ensemble.storage.redis import RedisHealth

log = logging.getLogger("ensemble.keysync")

RECONNECT_DELAY = 0.5  # first retry after a lost connection; doubles up to MAX_RECONNECT_DELAY
MAX_RECONNECT_DELAY = 5.0


class WireKey(msgspec.Struct, frozen=True):
    digest: str  # hex
    record: KeyRecord
    # Unix time of the publish; a subscriber's lag is its application time minus this (0: not sent
    # by writers older than this field, so no lag is measured).
    published_at: float = 0.0


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(WireKey).decode


def hash_name(ns: str) -> str:
    return f"{ns}:keys"


def channel_name(ns: str) -> str:
    return f"{ns}:keys:changed"


def _wire(digest: bytes, record: KeyRecord) -> bytes:
    return _encode(WireKey(digest=digest.hex(), record=record, published_at=time.time()))


def publish_sync(client: redis.Redis, ns: str, digest: bytes, record: KeyRecord) -> None:
    payload = _wire(digest, record)
    pipe = client.pipeline(transaction=True)
    pipe.hset(hash_name(ns), digest.hex(), payload)
    pipe.publish(channel_name(ns), payload)
    pipe.execute()


async def publish(client: redis.asyncio.Redis, ns: str, digest: bytes, record: KeyRecord) -> None:
    payload = _wire(digest, record)
    async with client.pipeline(transaction=True) as pipe:
        pipe.hset(hash_name(ns), digest.hex(), payload)
        pipe.publish(channel_name(ns), payload)
        await pipe.execute()


def find_sync(client: redis.Redis, ns: str, key_id: str) -> tuple[bytes, KeyRecord] | None:
    """The shared record with this key id (a revoke on an instance that never had the key locally)."""
    for value in client.hvals(hash_name(ns)):
        wire = _decode(value)
        if wire.record.key_id == key_id:
            return bytes.fromhex(wire.digest), wire.record
    return None


Apply = Callable[[Iterable[tuple[bytes, KeyRecord]]], None]


class KeySync:
    """Background task of one worker: full load, then live changes from the channel."""

    def __init__(
        self,
        client: redis.asyncio.Redis,
        ns: str,
        health: RedisHealth,
        apply: Apply,
    ) -> None:
        self.client = client
        self.ns = ns
        self.health = health
        self.apply = apply
        self.loaded = 0  # records applied by the last full load
        self.applied = 0  # records applied from the channel
        self.lag = 0.0  # seconds from the last change's publish to its application here
        self.on_lag: Callable[[float], None] | None = None  # told each new lag (the metrics gauge)

    async def seed(self, local: Iterable[tuple[bytes, KeyRecord]]) -> None:
        """Copy keys only this instance's SQLite knows into the shared table (never overwriting)."""
        async with self.client.pipeline(transaction=False) as pipe:
            n = 0
            for digest, record in local:
                pipe.hsetnx(hash_name(self.ns), digest.hex(), _wire(digest, record))
                n += 1
            if n:
                await pipe.execute()

    async def load_all(self) -> int:
        values = await self.client.hvals(hash_name(self.ns))
        records = []
        for value in values:
            try:
                wire = _decode(value)
            except msgspec.DecodeError:
                log.error("ignoring an unreadable key record in %s", hash_name(self.ns))
                continue
            records.append((bytes.fromhex(wire.digest), wire.record))
        self.apply(records)
        self.loaded = len(records)
        return self.loaded

    async def run(self, local: Callable[[], Iterable[tuple[bytes, KeyRecord]]] | None = None) -> None:
        delay = RECONNECT_DELAY
        seeded = False
        while True:
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(channel_name(self.ns))
                # Subscribed first, loaded second: a change made in between arrives on the channel.
                if not seeded and local is not None:
                    await self.seed(local())
                    seeded = True
                await self.load_all()
                self.health.ok("keys")
                delay = RECONNECT_DELAY
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is None:
                        # Idle: a cheap PING through the subscription notices a dead server.
                        await pubsub.ping()
                        continue
                    self._on_message(message)
            except asyncio.CancelledError:
                raise
            except (redis.RedisError, OSError) as e:
                self.health.failed("keys", e)
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_RECONNECT_DELAY)
            finally:
                with contextlib.suppress(redis.RedisError, OSError, TimeoutError):
                    await asyncio.wait_for(pubsub.aclose(), 1.0)  # type: ignore[no-untyped-call]

    def _on_message(self, message: dict[str, object]) -> None:
        if message.get("type") != "message":
            return
        data = message.get("data")
        if not isinstance(data, bytes):
            return
        try:
            wire = _decode(data)
        except msgspec.DecodeError:
            log.error("ignoring an unreadable key change on %s", channel_name(self.ns))
            return
        self.apply([(bytes.fromhex(wire.digest), wire.record)])
        self.applied += 1
        if wire.published_at:
            # Instance clocks may disagree a little: a change never arrives before it was made.
            self.lag = max(time.time() - wire.published_at, 0.0)
            if self.on_lag is not None:
                self.on_lag(self.lag)
