"""Rate-limit sync through Redis: push local usage, lease quota, pull the shared view (see docs/scale-out.md).

One background task per worker. Every `rate_limit.sync_interval` (and at once when a lease runs
low) it sends, for each scope that changed or whose lease needs renewing, one call of `SETTLE` —
all scopes pipelined in one round trip. Scopes are opaque strings (`key:<id>`,
`ep:<endpoint>:<model>`, …); the Redis key is `{namespace}:ratelimit:{scope}`, a hash that
expires one window after its last write:

    r:<epoch> / t:<epoch>   requests / tokens actually used in that slot (slots of window/60,
                            epochs of Redis' own clock, so instance clocks need not agree)
    g:<instance>            "requests,tokens,expiry_ms": quota leased to one instance, not used yet

The script (atomic on the Redis server) adds the instance's usage since the last settle, then tops
the instance's lease up to `want` (two sync intervals of its recent rate), but only out of
`limit - (everyone's usage in the window + every other live lease)`; an idle instance's lease
shrinks back the same way. A lease is charged in full when granted, so the sum of
usage and outstanding leases never exceeds the limit: with Redis reachable, N instances together
admit no more than one instance would (ε = 0 in the limiter's own slot-granular window; the only
slack is the admissions made during the one round trip of a settle, whose usage reaches Redis one
sync later). Leases expire in Redis after `GRANT_TTL` so a crashed instance's quota comes back.

Redis down or slow (each call bounded by COMMAND_TIMEOUT): every lease is dropped at once and each
instance admits on its local window plus the last shared view it pulled (which the native limiter
keeps for one window): requests go on being served, the outage is logged and shown in the health
object, and the next successful settle resumes sharing (usage counted meanwhile is pushed then).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio
from redis.exceptions import NoScriptError

from ensemble._native import RateLimiter
from ensemble.ratelimit.lease import Lease, Leases
from ensemble.storage.redis import RedisHealth

log = logging.getLogger("ensemble.ratelimit.sync")

SLOTS = 60  # the shared window is counted in window/60 slots, like the native limiter's
MIN_REFILL_GAP = 0.01  # seconds between two lease refills triggered by the request path

SETTLE = """
local key = KEYS[1]
local me = ARGV[1]
local slot_ms, slots = tonumber(ARGV[2]), tonumber(ARGV[3])
local limit_r, limit_t = tonumber(ARGV[4]), tonumber(ARGV[5])
local d_r, d_t = tonumber(ARGV[6]), tonumber(ARGV[7])
local keep_r, keep_t = tonumber(ARGV[8]), tonumber(ARGV[9])
local want_r, want_t = tonumber(ARGV[10]), tonumber(ARGV[11])
local ttl = tonumber(ARGV[12])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cur = math.floor(now / slot_ms)
-- A slot stays in the window until its *end* is a whole window old (slots + 1 of them are counted,
-- the current one partly): usage reaches Redis at the next settle, after it happened, and a slot
-- that left as soon as its start was a window old freed requests still inside a client's sliding
-- window (measured overshoot 6.7% for 60 rpm over 3 instances; tests/integration/test_global_rpm.py).
local rs, ts, stale = {}, {}, {}
local other_r, other_t = 0, 0
local all = redis.call('HGETALL', key)
for i = 1, #all, 2 do
  local f, v = all[i], all[i + 1]
  local kind = string.sub(f, 1, 2)
  if kind == 'r:' or kind == 't:' then
    local e = tonumber(string.sub(f, 3))
    if e + slots < cur then
      stale[#stale + 1] = f
    elseif kind == 'r:' then
      rs[e] = tonumber(v)
    else
      ts[e] = tonumber(v)
    end
  elseif kind == 'g:' and string.sub(f, 3) ~= me then
    local gr, gt, exp = string.match(v, '^(-?%d+),(-?%d+),(%d+)$')
    if exp == nil or tonumber(exp) <= now then
      stale[#stale + 1] = f
    else
      other_r = other_r + tonumber(gr)
      other_t = other_t + tonumber(gt)
    end
  end
end
if #stale > 0 then redis.call('HDEL', key, unpack(stale)) end
-- Usage goes to the current slot; a refund (negative) is taken back from the newest slots first,
-- where the reservation it corrects was most likely counted.
local function add(tab, prefix, d)
  if d > 0 then
    tab[cur] = (tab[cur] or 0) + d
    redis.call('HINCRBY', key, prefix .. cur, d)
  elseif d < 0 then
    local rest = -d
    for e = cur, cur - slots, -1 do
      local v = tab[e]
      if v ~= nil and v > 0 then
        local take = math.min(v, rest)
        tab[e] = v - take
        redis.call('HINCRBY', key, prefix .. e, -take)
        rest = rest - take
        if rest == 0 then break end
      end
    end
  end
end
add(rs, 'r:', d_r)
add(ts, 't:', d_t)
local used_r, used_t, oldest_r, oldest_t = 0, 0, nil, nil
for e, v in pairs(rs) do
  used_r = used_r + v
  if v > 0 and (oldest_r == nil or e < oldest_r) then oldest_r = e end
end
for e, v in pairs(ts) do
  used_t = used_t + v
  if v > 0 and (oldest_t == nil or e < oldest_t) then oldest_t = e end
end
-- Top the kept lease up to `want` (or give the surplus back), never past the limit.
local function grant(limit, used, keep, want)
  if limit <= 0 then return 0 end
  return math.max(-keep, math.min(want - keep, limit - used - keep))
end
local g_r = grant(limit_r, used_r + other_r, keep_r, want_r)
local g_t = grant(limit_t, used_t + other_t, keep_t, want_t)
if keep_r + g_r > 0 or keep_t + g_t > 0 then
  redis.call('HSET', key, 'g:' .. me, (keep_r + g_r) .. ',' .. (keep_t + g_t) .. ',' .. (now + ttl))
else
  redis.call('HDEL', key, 'g:' .. me)
end
redis.call('PEXPIRE', key, (slots + 1) * slot_ms + ttl + slot_ms)
-- When the shared window is full, the soonest its oldest used slot leaves it.
local retry = 0
if limit_r > 0 and keep_r + g_r < want_r and oldest_r ~= nil then
  retry = (oldest_r + slots + 1) * slot_ms - now
end
if limit_t > 0 and keep_t + g_t < want_t and oldest_t ~= nil then
  retry = math.max(retry, (oldest_t + slots + 1) * slot_ms - now)
end
return {g_r, g_t, used_r, used_t, other_r, other_t, retry}
"""


@dataclass(slots=True)
class ScopeState:
    pending_requests: int = 0  # local usage not pushed yet (negative after refunds)
    pending_tokens: int = 0
    pending_since: float = 0.0
    rate_requests: float = 0.0  # this instance's recent use per second (sizes the next grant)
    rate_tokens: float = 0.0
    settled_at: float = 0.0  # monotonic time of the last successful settle
    global_requests: int = 0  # what set_global was last given
    global_tokens: int = 0
    # Admission draws this scope from a lease (watch()); other scopes (seen only in the deltas,
    # e.g. endpoint scopes whose admission does not consult Leases) are pushed and viewed only.
    leased: bool = False
    tracked: bool = False  # track(): pull the shared view every interval even when idle here


class RateLimitSync:
    """Pushes deltas, leases quota and pulls the shared view for every scope of one limiter."""

    def __init__(
        self,
        client: redis.asyncio.Redis,
        ns: str,
        limiter: RateLimiter,
        leases: Leases,
        health: RedisHealth,
        *,
        sync_interval: float,
        clock_ms: Any,
        grant_ttl: float | None = None,
    ) -> None:
        self.client = client
        self.ns = ns
        self.limiter = limiter
        self.leases = leases
        self.health = health
        self.interval = max(0.05, sync_interval)
        self.clock_ms = clock_ms  # the limiter's clock (monotonic ms)
        self.window_ms = limiter.window_ms
        self.slot_ms = max(1, self.window_ms // SLOTS)
        # A lease is void in Redis after GRANT_TTL; this instance stops using it earlier, so it
        # never admits on a grant Redis has already given back to the pool.
        self.grant_ttl = grant_ttl or max(10.0, 6 * self.interval)
        self.lease_life = self.grant_ttl - 2 * self.interval
        self.instance = f"{os.uname().nodename}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.scopes: dict[str, ScopeState] = {}
        self._wake = asyncio.Event()
        self._sha = hashlib.sha1(SETTLE.encode()).hexdigest()
        self.leases.wake = self._wake.set
        self.rounds = 0  # successful settle round trips
        self.settled = 0  # scopes settled by them
        self.sharing = False  # leases in force (False: local limits only)
        self.lag = 0.0  # seconds from sending the last settle to applying the view it returned
        self.on_lag: Callable[[float], None] | None = None  # told each new lag (the metrics gauge)

    def redis_key(self, scope: str) -> str:
        return f"{self.ns}:ratelimit:{scope}"

    def watch(self, scope: str) -> None:
        """Lease this scope's quota from the next settle on. Only for scopes whose admission draws
        from `Leases.take` (Admission does for key scopes); any other scope is still synced."""
        st = self.scopes.get(scope)
        if st is None:
            st = self.scopes[scope] = ScopeState()
        if not st.leased:
            st.leased = True
            self._wake.set()

    def track(self, scope: str) -> None:
        """Pull this scope's shared view every interval even while this instance does not use it
        (endpoint scopes: the router then avoids endpoints other instances saturated)."""
        st = self.scopes.get(scope)
        if st is None:
            st = self.scopes[scope] = ScopeState()
        st.tracked = True

    def forget(self, scope: str) -> None:
        self.scopes.pop(scope, None)
        self.leases.drop(scope)

    # -- the loop -------------------------------------------------------------------------------

    async def run(self) -> None:
        next_full = 0.0
        while True:
            now = time.monotonic()
            timeout = max(0.0, next_full - now)
            if timeout > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
            self._wake.clear()
            self._collect()
            now = time.monotonic()
            full = now >= next_full
            if full:
                next_full = now + self.interval
                due = self._due(now)
            else:
                due = [s for s in self.leases.hungry if s in self.scopes] + [
                    s for s, st in self.scopes.items() if st.settled_at == 0.0 and s not in self.leases.hungry
                ]
            if due:
                try:
                    await self.settle(due)
                except asyncio.CancelledError:
                    raise
                except (redis.RedisError, OSError) as e:
                    self._degrade(e)
                    next_full = time.monotonic() + self.interval
            if not full:
                await asyncio.sleep(MIN_REFILL_GAP)

    def _collect(self) -> None:
        now = time.monotonic()
        for scope, dr, dt in self.limiter.drain_deltas():
            st = self.scopes.get(scope)
            if st is None:
                st = self.scopes[scope] = ScopeState()
            if st.pending_requests == 0 and st.pending_tokens == 0:
                st.pending_since = now
            st.pending_requests += dr
            st.pending_tokens += dt

    def _due(self, now: float) -> list[str]:
        renew_after = self.lease_life / 3
        return [
            scope
            for scope, st in self.scopes.items()
            if st.pending_requests
            or st.pending_tokens
            or scope in self.leases.hungry
            or st.settled_at == 0.0
            or st.tracked
            # Leases are renewed before Redis forgets them; unlimited idle scopes need nothing.
            or (now - st.settled_at >= renew_after and self.leases.get(scope) is not None)
        ]

    def _degrade(self, error: BaseException) -> None:
        if self.sharing:
            log.warning("rate-limit sync failed; %d scope(s) fall back to local limits", len(self.leases))
        self.sharing = False
        self.leases.clear()
        self.health.failed("ratelimit", error)
        # Usage counted while Redis is away is pushed when it returns, unless it already left the window.
        cutoff = time.monotonic() - self.window_ms / 1000
        for st in self.scopes.values():
            if st.pending_since and st.pending_since < cutoff:
                st.pending_requests = st.pending_tokens = 0
                st.pending_since = 0.0

    # -- one round trip -------------------------------------------------------------------------

    def _want(self, scope: str, st: ScopeState, limit_r: int, limit_t: int) -> tuple[int, int]:
        """How much to ask for: two sync intervals of this instance's recent rate, at least 1/64 of
        the limit (at least what a starved request needed), at most a quarter of it."""
        hungry = self.leases.hungry.get(scope)
        horizon = 2 * self.interval
        want_r = 0
        if limit_r > 0:
            floor_r = max(1, math.ceil(limit_r / 64))
            cap_r = max(1, math.ceil(limit_r / 4))
            want_r = min(cap_r, max(floor_r, math.ceil(st.rate_requests * horizon) + 1))
        want_t = 0
        if limit_t > 0:
            floor_t = max(math.ceil(limit_t / 64), 2 * (hungry or 0))
            cap_t = max(math.ceil(limit_t / 4), hungry or 0)
            want_t = min(cap_t, max(floor_t, math.ceil(st.rate_tokens * horizon)))
        return want_r, want_t

    async def settle(self, scopes: list[str], *, final: bool = False) -> None:
        """One round trip for `scopes`; `final` (shutdown) pushes usage and returns every lease."""
        now_ms = self.clock_ms()
        ttl_ms = int(self.grant_ttl * 1000)
        batch: list[tuple[str, ScopeState, int, int, int, int, bool]] = []
        calls: list[list[Any]] = []
        for scope in scopes:
            st = self.scopes[scope]
            limit_r, _, limit_t, _, _ = self.limiter.snapshot(scope, now_ms)
            lease = self.leases.get(scope)
            # What this instance keeps of its current lease is re-charged with the new grant;
            # without a valid lease nothing is kept (quota it held was already given back).
            keep_r, keep_t = (max(0, lease.requests), max(0, lease.tokens)) if lease else (0, 0)
            if not st.leased:
                limit_r = limit_t = 0  # nothing to lease: push usage, pull the view
            want_r, want_t = (0, 0) if final else self._want(scope, st, limit_r, limit_t)
            dr, dt = st.pending_requests, st.pending_tokens
            batch.append((scope, st, dr, dt, limit_r, limit_t, lease is not None))
            calls.append(
                [
                    *(self.redis_key(scope), self.instance, self.slot_ms, SLOTS, limit_r, limit_t),
                    *(dr, dt, keep_r, keep_t, want_r, want_t, ttl_ms),
                ]
            )
        sent = time.monotonic()
        try:
            results = await self._round_trip(calls)
        except NoScriptError:
            # A restarted (or flushed) Redis forgot the script: load it once, then retry.
            await self.client.script_load(SETTLE)
            results = await self._round_trip(calls)
        now = time.monotonic()
        now_ms = self.clock_ms()
        for (scope, st, dr, dt, limit_r, limit_t, had_lease), res in zip(batch, results, strict=True):
            g_r, g_t, used_r, used_t, other_r, other_t, retry_ms = (int(x) for x in res)
            st.pending_requests -= dr
            st.pending_tokens -= dt
            if st.pending_requests == 0 and st.pending_tokens == 0:
                st.pending_since = 0.0
            if st.settled_at:
                # Quick to rise (a burst), slow to fall (a pause between bursts).
                elapsed = max(now - st.settled_at, 0.01)
                inst_r, inst_t = max(0, dr) / elapsed, max(0, dt) / elapsed
                st.rate_requests = max(inst_r, 0.7 * st.rate_requests + 0.3 * inst_r)
                st.rate_tokens = max(inst_t, 0.7 * st.rate_tokens + 0.3 * inst_t)
            st.settled_at = now
            self.leases.hungry.pop(scope, None)
            self._set_view(scope, st, used_r + other_r, used_t + other_t, now_ms)
            if final:
                continue
            if limit_r > 0 or limit_t > 0:
                lease = self.leases.get(scope) if had_lease else None
                if lease is None:
                    lease = Lease(gated_requests=limit_r > 0, gated_tokens=limit_t > 0)
                    self.leases.set(scope, lease)
                lease.gated_requests, lease.gated_tokens = limit_r > 0, limit_t > 0
                lease.requests += g_r
                lease.tokens += g_t
                # Refill when half of what this round left is used, not when it is all gone.
                lease.low_requests = lease.requests // 2
                lease.low_tokens = lease.tokens // 2
                lease.until = now + self.lease_life
                lease.retry_at = now + retry_ms / 1000 if retry_ms > 0 else 0.0
            else:
                self.leases.drop(scope)
        self.rounds += 1
        self.settled += len(batch)
        self.lag = time.monotonic() - sent
        if self.on_lag is not None:
            self.on_lag(self.lag)
        if not self.sharing:
            self.sharing = True
        self.health.ok("ratelimit")

    async def _round_trip(self, calls: list[list[Any]]) -> list[Any]:
        """Every scope's settle in one pipelined round trip (EVALSHA: no script body on the wire)."""
        async with self.client.pipeline(transaction=False) as pipe:
            for c in calls:
                pipe.evalsha(self._sha, 1, *c)
            return list(await pipe.execute())

    def _set_view(self, scope: str, st: ScopeState, shared_r: int, shared_t: int, now_ms: int) -> None:
        """Other instances' usage (shared total minus this instance's own window) for the limiter."""
        local_r, local_t = self.limiter.usage(scope, now_ms)
        local_r -= st.global_requests
        local_t -= st.global_tokens
        # Pending usage is local but not in `shared` yet; do not subtract it twice.
        others_r = max(0, shared_r - max(0, local_r - st.pending_requests))
        others_t = max(0, shared_t - max(0, local_t - st.pending_tokens))
        st.global_requests, st.global_tokens = others_r, others_t
        self.limiter.set_global(scope, others_r, others_t, now_ms)

    def view(self) -> dict[str, Any]:
        return {
            "sharing": self.sharing,
            "instance": self.instance,
            "scopes": len(self.scopes),
            "leased_scopes": len(self.leases),
            "rounds": self.rounds,
            "settled": self.settled,
        }
