"""Budgets shared through Redis by every instance: leases of money, never a Redis call per request.

Like the rate-limit leases (ratelimit/sync.py), each instance reserves only out of a slice of the
budget that one atomic Redis script granted it. Per budget and period the Redis hash
`{namespace}:budget:{scope}:{period start}` holds

    s:<database>  the period's spend (and provider batch holds) one instance's SQLite had recorded
                  when that instance first brought the budget to Redis: set once per database
    spent         micro-dollars settled by every instance since
    held          provider batches' reservations committed and not settled yet (budget/holds.py)
    floor         after Redis lost the hash: the largest total an instance had seen
    g:<process>   "amount,expiry_ms": the slice one process holds (unreserved + reserved in flight)

The period's total is `max(floor, sum of the seeds) + spent + held`, so spend an instance recorded
before the budget reached it counts too, once. The script charges a slice in full when it grants
it, so `total + every slice <= limit`: N instances together never pass the ceiling. The background task pushes settled spend and tops each
slice up every `rate_limit.sync_interval`, sooner when a slice runs low; a request whose slice is
short waits for that one round trip (`refill`) before it is refused.

Redis down: an instance keeps spending the slice it holds until the slice's life ends (it is
charged in Redis, so nobody else can have it), and nothing more; a Redis that comes back gets the
spend pushed then. A crashed instance's slice returns to the pool when its grant expires. A Redis
that lost its data is seeded again: each database's seed, and the largest period total a process
that had seen it offers as the floor.

Key records (budgets included) travel through the key sync. Customers live in the database of the
instance they were created on, so their budgets travel here: each instance writes the budgets of
the customers its database holds into the hash `{namespace}:budget:customers` (id -> "limit,period",
"none" for no budget) and reads the others' every interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

import redis
import redis.asyncio
from redis.exceptions import NoScriptError

from ensemble.budget.ledger import Account, Budgets
from ensemble.storage.redis import RedisHealth

log = logging.getLogger("ensemble.budget.sync")

REFILL_WAIT = 1.0  # the longest a request waits for a refill before it is refused
GRANT_TTL_MIN = 30.0

SETTLE = """
local key, me, db = KEYS[1], ARGV[1], ARGV[2]
local limit, seed, seen = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local d, dh = tonumber(ARGV[6]), tonumber(ARGV[7])
local keep, want, need = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local ttl, expire_at = tonumber(ARGV[11]), tonumber(ARGV[12])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- Each database's earlier spend counts once. A process that saw the period and finds its
-- database's seed gone knows Redis lost the hash: the total it saw becomes the floor.
if redis.call('HSETNX', key, 's:' .. db, seed) == 1 and seen > 0 then
  if seen > tonumber(redis.call('HGET', key, 'floor') or '0') then redis.call('HSET', key, 'floor', seen) end
end
local spent = tonumber(redis.call('HINCRBY', key, 'spent', d))
local held = tonumber(redis.call('HINCRBY', key, 'held', dh))
local seeds, floor, other, stale = 0, 0, 0, {}
local all = redis.call('HGETALL', key)
for i = 1, #all, 2 do
  local f, v = all[i], all[i + 1]
  local kind = string.sub(f, 1, 2)
  if kind == 's:' then
    seeds = seeds + tonumber(v)
  elseif f == 'floor' then
    floor = tonumber(v)
  elseif kind == 'g:' and string.sub(f, 3) ~= me then
    local amount, exp = string.match(v, '^(-?%d+),(%d+)$')
    if exp == nil or tonumber(exp) <= now then
      stale[#stale + 1] = f
    else
      other = other + tonumber(amount)
    end
  end
end
if #stale > 0 then redis.call('HDEL', key, unpack(stale)) end
local total = math.max(floor, seeds) + spent + held
-- Top the slice up towards `want` (at most half of what is free, at least `need`), never past the limit.
local free = limit - total - other
local target = math.max(need, math.min(want, math.floor(free / 2)))
local grant = math.max(-keep, math.min(target - keep, free - keep))
if keep + grant > 0 then
  redis.call('HSET', key, 'g:' .. me, (keep + grant) .. ',' .. (now + ttl))
else
  redis.call('HDEL', key, 'g:' .. me)
end
if expire_at > 0 then redis.call('EXPIREAT', key, expire_at) end
return {grant, total, held}
"""


class Seeds(Protocol):
    """Where an account's seed comes from: this instance's database (budget/loading.py)."""

    database_id: str

    async def read(self, accounts: list[Account]) -> None:
        """Set `seed` on each account: the period's spend and holds its database recorded."""


class BudgetSync:
    def __init__(
        self,
        client: redis.asyncio.Redis,
        ns: str,
        budgets: Budgets,
        health: RedisHealth,
        *,
        sync_interval: float,
        local_customers: Callable[[], dict[str, tuple[int | None, str]]] = dict,
        seeds: Seeds | None = None,
    ) -> None:
        self.client = client
        self.ns = ns
        self.budgets = budgets
        self.health = health
        self.interval = max(0.05, sync_interval)
        self.grant_ttl = max(GRANT_TTL_MIN, 10 * self.interval)
        self.lease_life = self.grant_ttl - 2 * self.interval
        self.instance = f"{os.uname().nodename}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.hungry: dict[str, int] = {}  # scope -> the largest amount a request could not reserve
        self.rate: dict[str, float] = {}  # scope -> recent spend per second here (sizes slices)
        self._wake = asyncio.Event()
        self._round: asyncio.Future[None] | None = None
        self._sha = hashlib.sha1(SETTLE.encode()).hexdigest()
        self.rounds = 0
        self.sharing = False
        self.local_customers = local_customers
        self.seeds = seeds
        self._published: dict[str, str] = {}  # customer id -> what this instance last wrote
        self._remote: dict[str, str] = {}  # customer id -> the budget another instance wrote
        budgets.wake = self.wake
        budgets.refill = self.refill

    def redis_key(self, acc: Account) -> str:
        return f"{self.ns}:budget:{acc.scope}:{int(acc.starts)}"

    def wake(self, acc: Account) -> None:
        self.hungry.setdefault(acc.scope, 0)
        self._wake.set()

    async def refill(self, accounts: list[Account], amount: int) -> None:
        """Ask for `amount` more on each account and wait for that round trip (bounded). While Redis
        is unreachable nothing is waited for: the slice held is all there is until it is back."""
        if not self.sharing and self.rounds:
            self._wake.set()
            return
        for acc in accounts:
            if amount > self.hungry.get(acc.scope, -1):
                self.hungry[acc.scope] = amount
        loop = asyncio.get_running_loop()
        if self._round is None or self._round.done():
            self._round = loop.create_future()
        round_done = self._round
        self._wake.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(round_done), REFILL_WAIT)

    # -- the loop ---------------------------------------------------------------------------------

    async def run(self) -> None:
        next_full = 0.0
        while True:
            timeout = max(0.0, next_full - time.monotonic())
            if timeout > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
            self._wake.clear()
            round_done, self._round = self._round, None
            now = time.monotonic()
            full = now >= next_full
            if full:
                next_full = now + self.interval
            due = [
                a
                for a in self.budgets.accounts.values()
                if a.shared and (full or a.scope in self.hungry or a.lease_until == 0.0)
            ]
            try:
                if full:
                    await self.share_customers()
                    due = [a for a in self.budgets.accounts.values() if a.shared]
                if due:
                    await self.settle(due)
            except asyncio.CancelledError:
                raise
            except (redis.RedisError, OSError) as e:
                self._degrade(e)
                next_full = time.monotonic() + self.interval
            finally:
                if round_done is not None and not round_done.done():
                    round_done.set_result(None)

    def _degrade(self, error: BaseException) -> None:
        if self.sharing:
            log.warning(
                "budget sync failed (%s); each instance spends only the budget slice it holds",
                type(error).__name__,
            )
        self.sharing = False
        self.health.failed("budgets", error)

    async def settle(self, accounts: list[Account], *, final: bool = False) -> None:
        """One pipelined round trip for `accounts`; `final` (shutdown) pushes spend and returns every slice."""
        ttl_ms = int(self.grant_ttl * 1000)
        unseeded = [a for a in accounts if a.seed is None]
        if unseeded:  # their database's spend first: Redis takes a seed once
            if self.seeds is not None:
                await self.seeds.read(unseeded)
            else:
                for a in unseeded:
                    a.seed = 0
            accounts = [a for a in accounts if a.seed is not None]
        database = self.seeds.database_id if self.seeds is not None else "local"
        sent: list[tuple[Account, float, int, int]] = []
        calls: list[list[Any]] = []
        for acc in accounts:
            keep = max(0, acc.available) + acc.reserved
            need = self.hungry.get(acc.scope, 0)
            want = 0 if final else self._want(acc, need)
            expire_at = 0 if acc.resets is None else int(acc.resets) + 7 * 86400
            d, dh = acc.pending, acc.pending_held
            sent.append((acc, acc.starts, d, dh))
            calls.append(
                [
                    self.redis_key(acc),
                    self.instance,
                    database,
                    acc.limit,
                    acc.seed or 0,
                    acc.floor,
                    d,
                    dh,
                    keep,
                    want,
                    need,
                    ttl_ms,
                    expire_at,
                ]
            )
        try:
            results = await self._round_trip(calls)
        except NoScriptError:
            await self.client.script_load(SETTLE)
            results = await self._round_trip(calls)
        now = time.monotonic()
        for (acc, starts, d, dh), res in zip(sent, results, strict=True):
            grant, total, held = (int(x) for x in res)
            self.hungry.pop(acc.scope, None)
            if acc.starts != starts:
                continue  # the period rolled over during the round trip: that slice is void
            acc.pending -= d
            acc.pending_held -= dh
            # Redis holds the period's spend from now on; should it lose it (a restart without
            # persistence), the next settle offers the last total seen here as its floor.
            acc.floor = total
            self.rate[acc.scope] = 0.7 * self.rate.get(acc.scope, 0.0) + 0.3 * d / self.interval
            held = max(0, held)  # below 0 only after Redis lost holds that are settling since
            acc.spent = total - held + acc.pending
            acc.held = held + acc.pending_held
            if final:
                acc.available, acc.lease_until = 0, 0.0
                continue
            acc.available += grant
            acc.lease_until = now + self.lease_life
        self.rounds += 1
        self.sharing = True
        self.health.ok("budgets")

    def customers_key(self) -> str:
        return f"{self.ns}:budget:customers"

    async def share_customers(self) -> None:
        """Write the budgets of this database's customers, apply the others' (one round trip)."""
        local = self.local_customers()
        mine = {
            cid: "none" if limit is None else f"{limit},{period}" for cid, (limit, period) in local.items()
        }
        changed: dict[Any, Any] = {cid: v for cid, v in mine.items() if self._published.get(cid) != v}
        async with self.client.pipeline(transaction=False) as pipe:
            if changed:
                pipe.hset(self.customers_key(), mapping=changed)
            pipe.hgetall(self.customers_key())
            replies = await pipe.execute()
        self._published.update(changed)
        shared: dict[bytes | str, bytes | str] = replies[-1]
        for raw_id, raw in shared.items():
            cid = raw_id.decode() if isinstance(raw_id, bytes) else raw_id
            value = raw.decode() if isinstance(raw, bytes) else raw
            if cid in local or self._remote.get(cid) == value:
                continue
            self._remote[cid] = value
            limit, _, period = value.partition(",")
            if value == "none":
                self.budgets.configure("customer", cid, None, "month", None)
            elif limit.isdigit() and period:
                self.budgets.configure("customer", cid, int(limit), period, None)

    def _want(self, acc: Account, need: int) -> int:
        """Two sync intervals of recent spend here, at least 1/32 of the budget and twice what a
        starved request needed, at most a quarter of the budget."""
        rate = self.rate.get(acc.scope, 0.0) * 2 * self.interval
        return int(max(need, min(acc.limit // 4, max(acc.limit // 32, 2 * need, rate))))

    async def _round_trip(self, calls: list[list[Any]]) -> list[Any]:
        async with self.client.pipeline(transaction=False) as pipe:
            for c in calls:
                pipe.evalsha(self._sha, 1, *c)
            return list(await pipe.execute())

    async def close(self) -> None:
        """Shutdown: push the last spend and give every slice back, so the others can use it now."""
        shared = [a for a in self.budgets.accounts.values() if a.shared]
        if shared:
            with contextlib.suppress(redis.RedisError, OSError, TimeoutError):
                await asyncio.wait_for(self.settle(shared, final=True), 2.0)

    def view(self) -> dict[str, Any]:
        return {"sharing": self.sharing, "rounds": self.rounds, "accounts": len(self.budgets.accounts)}
