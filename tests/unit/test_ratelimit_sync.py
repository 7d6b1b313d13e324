"""Leased shared limits against a real redis-server: two "instances" (two limiters) in one loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio

from ensemble.config.schema import RedisConfig
from ensemble.errors import RateLimited
from ensemble.ratelimit import Admission
from ensemble.ratelimit.lease import Lease, Leases
from ensemble.ratelimit.sync import RateLimitSync
from ensemble.storage.keys import KeyRecord
from ensemble.storage.redis import RedisHealth, connect
from support.records import key_record as key
from support.shared import RedisServer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.stop()


class Instance:
    def __init__(self, client: redis.asyncio.Redis, ns: str, grant_ttl: float | None = None) -> None:
        self.admission = Admission(window_s=60, default_rpm=0, default_tpm=0)
        self.leases = Leases()
        self.admission.leases = self.leases
        self.health = RedisHealth(address="test", namespace=ns)
        self.sync = RateLimitSync(
            client,
            ns,
            self.admission.limiter,
            self.leases,
            self.health,
            sync_interval=1.0,
            clock_ms=self.admission.clock,
            grant_ttl=grant_ttl,
        )

    def admit(self, record: KeyRecord, tokens: int = 0) -> bool:
        try:
            self.admission.admit_key(record, tokens)
        except RateLimited:
            return False
        return True

    async def settle(self) -> None:
        self.sync._collect()
        await self.sync.settle(list(self.sync.scopes))


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[redis.asyncio.Redis]:
    c = redis.asyncio.Redis(host="127.0.0.1", port=redis_server.port)
    await c.flushall()
    yield c
    await c.aclose()


async def test_two_instances_never_admit_more_than_the_limit(client: redis.asyncio.Redis) -> None:
    k = key(rpm=10)
    one, two = Instance(client, "t1"), Instance(client, "t1")
    for inst in (one, two):
        inst.admission.configure_key(k)
        inst.sync.watch("key:key_test")
        await inst.settle()
    admitted = 0
    for _ in range(20):  # each round: both try 3 requests, then refill what ran low
        for inst in (one, two):
            admitted += sum(inst.admit(k) for _ in range(3))
        for inst in (one, two):
            await inst.settle()
    assert admitted == 10
    # Each held a lease without coordination on the request path, and both got a share.
    assert one.sync.rounds > 1 and two.sync.rounds > 1


async def test_each_settle_reports_its_round_trip_as_the_sync_lag(client: redis.asyncio.Redis) -> None:
    inst = Instance(client, "lag")
    seen: list[float] = []
    inst.sync.on_lag = seen.append
    inst.admission.configure_key(key(rpm=10))
    inst.sync.watch("key:key_test")
    assert inst.sync.lag == 0.0
    await inst.settle()
    await inst.settle()
    assert len(seen) == 2 and all(0 < lag < 5 for lag in seen)
    assert inst.sync.lag == seen[-1]


async def test_a_crashed_instances_lease_returns_to_the_pool(client: redis.asyncio.Redis) -> None:
    k = key(rpm=8)
    crashed, alive = Instance(client, "t2", grant_ttl=0.5), Instance(client, "t2", grant_ttl=0.5)
    crashed.admission.configure_key(k)
    crashed.sync.watch("key:key_test")
    crashed.leases.hungry["key:key_test"] = 0
    crashed.sync.scopes["key:key_test"].rate_requests = 10.0  # busy: it asks for a big chunk
    await crashed.settle()
    held = crashed.leases.remaining("key:key_test")[0]
    assert held >= 2
    alive.admission.configure_key(k)
    alive.sync.watch("key:key_test")
    got = 0
    for _ in range(10):
        await alive.settle()
        while alive.admit(k):
            got += 1
    assert got == 8 - held  # the crashed instance's quota is still charged
    await asyncio.sleep(0.6)  # the behaviour under test: its grant (ttl 0.5 s) expires in Redis
    for _ in range(5):
        await alive.settle()
        while alive.admit(k):
            got += 1
    assert got == 8


async def test_token_refunds_go_back_to_the_lease_and_to_redis(client: redis.asyncio.Redis) -> None:
    k = key(tpm=1000)
    inst = Instance(client, "t3")
    inst.admission.configure_key(k)
    inst.sync.watch("key:key_test")
    inst.leases.hungry["key:key_test"] = 600
    await inst.settle()
    before = inst.leases.remaining("key:key_test")[1]
    assert before >= 600
    r = inst.admission.admit_key(k, 600)
    assert inst.leases.remaining("key:key_test")[1] == before - 600
    inst.admission.reconcile(r, 100)
    assert inst.leases.remaining("key:key_test")[1] == before - 100
    await inst.settle()
    fields = await client.hgetall("t3:ratelimit:key:key_test")
    used = sum(int(v) for f, v in fields.items() if f.startswith(b"t:"))
    assert used == 100


async def test_redis_down_falls_back_to_local_limits(redis_server: RedisServer) -> None:
    dead = connect(RedisConfig(address="127.0.0.1:1"))  # nothing listens there
    k = key(rpm=3)
    inst = Instance(dead, "t4")
    inst.admission.configure_key(k)
    inst.leases.set("key:key_test", Lease(True, False, requests=0, until=time.monotonic() + 60))
    inst.sync.watch("key:key_test")
    task = asyncio.get_running_loop().create_task(inst.sync.run())
    try:
        for _ in range(50):
            await asyncio.sleep(0.02)
            if inst.health.failures:
                break
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await dead.aclose()
    assert inst.health.view()["state"] == "degraded" and not inst.sync.sharing
    # The empty lease is gone: the local window (3 per minute) decides again.
    assert [inst.admit(k) for _ in range(4)] == [True, True, True, False]


async def test_other_instances_usage_reaches_the_local_view(client: redis.asyncio.Redis) -> None:
    """Endpoint-style scopes: not leased, but every instance counts the others' usage."""
    scope = "ep:primary:model-x"
    busy, idle = Instance(client, "t5"), Instance(client, "t5")
    for inst in (busy, idle):
        inst.admission.limiter.configure(scope, 10, 0)
    idle.sync.track(scope)
    now = busy.admission.clock()
    assert all(busy.admission.limiter.admit([scope], 0, now)[0] for _ in range(7))
    await busy.settle()
    await idle.settle()
    limiter = idle.admission.limiter
    assert limiter.usage(scope, idle.admission.clock()) == (7, 0)
    results = [limiter.admit([scope], 0, idle.admission.clock())[0] for _ in range(4)]
    assert results == [True, True, True, False]
    assert idle.leases.get(scope) is None  # viewed, not leased


def test_leases_take_and_give_back() -> None:
    woken: list[bool] = []
    now = [100.0]
    leases = Leases(wake=lambda: woken.append(True), clock=lambda: now[0])
    assert leases.take("s", 5) is None  # not leased: the local window decides
    leases.set("s", Lease(True, True, requests=2, tokens=10, until=200.0))
    assert leases.take("s", 5) is None
    assert leases.take("s", 5) is None
    assert woken and leases.hungry["s"] == 5  # ran low: a refill was asked for
    assert leases.take("s", 1) == pytest.approx(0.05)
    leases.give_back("s", 1, 5)
    assert leases.remaining("s") == (1, 5)
    leases.get("s").retry_at = 130.0  # type: ignore[union-attr]
    leases.give_back("s", -1, 0)
    assert leases.take("s", 1) == pytest.approx(30.0)
    now[0] = 250.0  # expired: no longer gates
    assert leases.take("s", 1) is None and leases.get("s") is None
