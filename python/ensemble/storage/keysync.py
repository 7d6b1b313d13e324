"""API-key sync between instances through Redis (see docs/scale-out.md).

Each instance's own SQLite is the truth for the changes saved there; Redis carries the news:

* `{ns}:keys` — a hash, SHA-256 digest (hex) → the JSON key record with its version (the ms of the
  change). A restarted (or newly added) instance loads the whole table from it.
* `{ns}:keys:changed` — a pub/sub channel; every create/update/disable/revoke publishes the new
  record there, and every instance applies it at once (well within the one second docs/scale-out.md promises).

Writers (the CLI, the admin API) publish with one script that sets the hash field and publishes
only if the version is newer than the one Redis holds, so an old change never undoes a newer one.
A subscriber that lost its connection may have missed messages, so after every (re)subscribe it
reconciles: it reloads the whole hash (newer versions apply), then publishes every local record
newer than Redis's, such as a change saved while Redis was away. Each instance applies a record
only if its version is at least the one it holds, and keeps records learnt from others in its
SQLite too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable

import msgspec
import redis
import redis.asyncio

from ensemble.storage.keys import KeyRecord, Versioned
from ensemble.storage.redis import RedisHealth

log = logging.getLogger("ensemble.keysync")

RECONNECT_DELAY = 0.25  # first retry after a lost connection; doubles up to MAX_RECONNECT_DELAY
MAX_RECONNECT_DELAY = 0.25  # a change saved during an outage reaches everyone within 1 s of Redis returning


class WireKey(msgspec.Struct, frozen=True):
    digest: str  # hex
    record: KeyRecord
    updated_ms: int = 0  # the change's version; 0 in records written before versions existed
    # Unix time of the publish; a subscriber's lag is its application time minus this (0: not sent
    # by writers older than this field, so no lag is measured).
    published_at: float = 0.0


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(WireKey).decode


def hash_name(ns: str) -> str:
    return f"{ns}:keys"


def channel_name(ns: str) -> str:
    return f"{ns}:keys:changed"


def _wire(digest: bytes, record: KeyRecord, version: int) -> bytes:
    return _encode(WireKey(digest=digest.hex(), record=record, updated_ms=version, published_at=time.time()))


def now_ms() -> int:
    return int(time.time() * 1000)


# Set and announce a record unless Redis already holds the same or a newer version of it.
_PUBLISH = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then
  local ok, old = pcall(cjson.decode, cur)
  if ok and type(old) == 'table' and (tonumber(old['updated_ms']) or 0) >= tonumber(ARGV[3]) then
    return 0
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PUBLISH', KEYS[2], ARGV[2])
return 1
"""


def publish_sync(client: redis.Redis, ns: str, digest: bytes, record: KeyRecord, version: int = 0) -> None:
    version = version or now_ms()
    payload = _wire(digest, record, version)
    client.eval(_PUBLISH, 2, hash_name(ns), channel_name(ns), digest.hex(), payload, version)


async def publish(
    client: redis.asyncio.Redis, ns: str, digest: bytes, record: KeyRecord, version: int = 0
) -> bool:
    """True when Redis took it (False: it already held this version or a newer one)."""
    version = version or now_ms()
    payload = _wire(digest, record, version)
    done = await client.eval(_PUBLISH, 2, hash_name(ns), channel_name(ns), digest.hex(), payload, version)
    return bool(done)


def find_sync(client: redis.Redis, ns: str, key_id: str) -> tuple[bytes, KeyRecord] | None:
    """The shared record with this key id (a revoke on an instance that never had the key locally)."""
    for value in client.hvals(hash_name(ns)):
        wire = _decode(value)
        if wire.record.key_id == key_id:
            return bytes.fromhex(wire.digest), wire.record
    return None


Apply = Callable[[Iterable[Versioned]], None]
LocalKeys = Callable[[], Awaitable[list[Versioned]]]


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
        self.pushed = 0  # local changes published on reconnect
        self.applied = 0  # records applied from the channel
        self.lag = 0.0  # seconds from the last change's publish to its application here
        self.on_lag: Callable[[float], None] | None = None  # told each new lag (the metrics gauge)

    async def load_all(self) -> dict[bytes, int]:
        """Apply the whole shared table; returns each record's version there."""
        values = await self.client.hvals(hash_name(self.ns))
        records: list[Versioned] = []
        for value in values:
            try:
                wire = _decode(value)
            except msgspec.DecodeError:
                log.error("ignoring an unreadable key record in %s", hash_name(self.ns))
                continue
            records.append((bytes.fromhex(wire.digest), wire.record, wire.updated_ms))
        self.apply(records)
        self.loaded = len(records)
        return {d: v for d, _, v in records}

    async def reconcile(self, local: LocalKeys | None) -> int:
        """Load the shared table, then publish every local record newer than Redis's (a change
        saved while Redis was away, or a key only this instance's SQLite has). Returns how many."""
        shared = await self.load_all()
        pushed = 0
        for digest, record, version in await local() if local is not None else ():
            if version > shared.get(digest, -1) and await publish(
                self.client, self.ns, digest, record, version
            ):
                pushed += 1
        if pushed:
            log.info("published %d key change(s) saved while Redis was unreachable", pushed)
        self.pushed += pushed
        return pushed

    async def run(self, local: LocalKeys | None = None) -> None:
        delay = RECONNECT_DELAY
        while True:
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(channel_name(self.ns))
                # Subscribed first, reconciled second: a change made in between arrives on the channel.
                await self.reconcile(local)
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
        self.apply([(bytes.fromhex(wire.digest), wire.record, wire.updated_ms)])
        self.applied += 1
        if wire.published_at:
            # Instance clocks may disagree a little: a change never arrives before it was made.
            self.lag = max(time.time() - wire.published_at, 0.0)
            if self.on_lag is not None:
                self.on_lag(self.lag)
