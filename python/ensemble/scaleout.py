"""The shared state of a scaled-out deployment, as one worker sees it (see docs/scale-out.md).

`Scaleout` owns the Redis client and the S3 store when they are configured, starts and stops
their background tasks, and is the status object /admin/status reads (`view()`). Without
`redis.address` and `persistence.s3.bucket` every method is a cheap no-op, so a single instance
behaves exactly as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import redis

from ensemble import telemetry
from ensemble.budget.ledger import Budgets
from ensemble.budget.sync import BudgetSync, Seeds
from ensemble.config.schema import Config
from ensemble.ratelimit import Admission
from ensemble.ratelimit.lease import Leases
from ensemble.ratelimit.sync import RateLimitSync
from ensemble.storage import keysync
from ensemble.storage import redis as shared
from ensemble.storage.keys import KeyRecord
from ensemble.storage.keysync import Apply, KeySync, LocalKeys
from ensemble.storage.s3 import S3Store, StoredResponse
from ensemble.usage.request_log import RequestLog

log = logging.getLogger("ensemble.scaleout")

STARTUP_WAIT = 2.0  # how long start-up waits for the shared key table and first leases
SHARED_READ_WAIT = 0.5  # a Redis read on the request path (a response's tombstone) waits no longer
# A deleted response's tombstone outlives every copy another instance may still hold (the S3 lookup
# looks back 7 days; local SQLite rows are what the request log keeps).
TOMBSTONE_TTL = 90 * 86400


class Scaleout:
    def __init__(self, config: Config, admission: Admission, apply_keys: Apply) -> None:
        self.config = config
        self.admission = admission
        self.health: shared.RedisHealth | None = None
        self.keysync: KeySync | None = None
        self.ratesync: RateLimitSync | None = None
        self.budgets: Budgets | None = None  # the runtime's; shared through `budgetsync` with Redis
        self.local_customers: Callable[[], dict[str, tuple[int | None, str]]] = dict
        self.budget_seeds: Seeds | None = None  # this instance's database: spend before a budget
        self.budgetsync: BudgetSync | None = None
        self.s3: S3Store | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._apply_keys = apply_keys
        self._client: Any = None
        self._watch_early: set[str] = set()  # key scopes loaded before start() built the sync

    @property
    def redis_configured(self) -> bool:
        return bool(self.config.redis.address)

    async def start(self, request_log: RequestLog, local_keys: LocalKeys) -> None:
        loop = asyncio.get_running_loop()
        if self.config.persistence.s3.bucket:
            self.s3 = S3Store(self.config.persistence.s3)
            self.s3.start()
            request_log.observers.append(self.s3.submit)
        if not self.redis_configured:
            return
        rc = self.config.redis
        ns = shared.namespace(rc)
        self.health = shared.RedisHealth(address=shared.display_address(rc.address), namespace=ns)
        self._client = shared.connect(rc)
        self.keysync = KeySync(self._client, ns, self.health, self._apply_keys)
        leases = Leases()
        self.admission.leases = leases
        self.ratesync = RateLimitSync(
            self._client,
            ns,
            self.admission.limiter,
            leases,
            self.health,
            sync_interval=self.config.rate_limit.sync_interval,
            clock_ms=self.admission.clock,
        )
        self.keysync.on_lag = self.ratesync.on_lag = self._report_lag
        for scope in list(self._watch_early):
            self.ratesync.watch(scope)
        if self.budgets is not None:
            self.budgetsync = BudgetSync(
                self._client,
                ns,
                self.budgets,
                self.health,
                sync_interval=self.config.rate_limit.sync_interval,
                local_customers=self.local_customers,
                seeds=self.budget_seeds,
            )
        # Endpoint scopes are admitted on the local counters plus everyone's usage (the shared
        # view), pulled every interval even while this instance does not use the endpoint.
        self.admission.on_endpoint = self.ratesync.track
        for lim in self.admission.endpoints():
            self.ratesync.track(lim.scope)
        # A restarted instance serves only once it holds the full key table (or Redis is down).
        try:
            await asyncio.wait_for(self.keysync.reconcile(local_keys), STARTUP_WAIT)
        except (redis.RedisError, OSError, TimeoutError) as e:
            self.health.failed("keys", e if not isinstance(e, TimeoutError) else TimeoutError("start-up"))
        self._tasks.append(loop.create_task(self.keysync.run(local_keys), name="redis-key-sync"))
        with contextlib.suppress(redis.RedisError, OSError, TimeoutError):
            scopes = list(self.ratesync.scopes)
            if scopes:
                await asyncio.wait_for(self.ratesync.settle(scopes), STARTUP_WAIT)
        self._tasks.append(loop.create_task(self.ratesync.run(), name="redis-ratelimit-sync"))
        if self.budgetsync is not None:
            with contextlib.suppress(redis.RedisError, OSError, TimeoutError):
                await asyncio.wait_for(self.budgetsync.share_customers(), STARTUP_WAIT)
                accounts = [a for a in self.budgets.accounts.values() if a.shared] if self.budgets else []
                if accounts:  # first slices before serving, so the first requests need not wait
                    await asyncio.wait_for(self.budgetsync.settle(accounts), STARTUP_WAIT)
            self._tasks.append(loop.create_task(self.budgetsync.run(), name="redis-budget-sync"))

    def _report_lag(self, _latest: float) -> None:
        """ensemble_redis_sync_lag_seconds: the larger of the last key change's publish-to-apply
        time and the last rate-limit settle's round trip (a slow key delivery is not hidden by the
        next quick settle)."""
        assert self.keysync is not None and self.ratesync is not None
        telemetry.set_redis_sync_lag(max(self.keysync.lag, self.ratesync.lag))

    def watch_key(self, record: KeyRecord) -> None:
        scope = self.admission.key_scope(record.key_id)
        if record.status == "revoked":
            if self.ratesync is not None:
                self.ratesync.forget(scope)
            return
        if self.ratesync is None:
            if self.redis_configured and any(self.admission.limits_for(record)):
                self._watch_early.add(scope)
            return
        if any(self.admission.limits_for(record)):
            self.ratesync.watch(scope)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.ratesync is not None:
            # Push the last usage and give leased quota back, so the others can use it now.
            self.ratesync.leases.clear()
            self.ratesync._collect()
            with contextlib.suppress(redis.RedisError, OSError, TimeoutError):
                scopes = [s for s, st in self.ratesync.scopes.items() if st.pending_requests or st.settled_at]
                if scopes:
                    await asyncio.wait_for(self.ratesync.settle(scopes, final=True), 2.0)
        if self.budgetsync is not None:
            await self.budgetsync.close()
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.aclose()
        if self.s3 is not None:
            await self.s3.close(limit_s=self.config.server.drain_timeout)

    async def publish_key(self, digest: bytes, record: KeyRecord, version: int = 0) -> bool:
        """Share a created/updated/disabled/revoked key with every instance (the admin API calls
        this after writing its own SQLite). False when Redis is configured but unreachable."""
        if self._client is None:
            return True
        try:
            await asyncio.wait_for(
                keysync.publish(self._client, shared.namespace(self.config.redis), digest, record, version),
                STARTUP_WAIT,
            )
        except (redis.RedisError, OSError, TimeoutError) as e:
            if self.health is not None:
                self.health.failed("keys", e)
            return False
        return True

    async def fetch_response(self, request_id: str, key_id: str) -> StoredResponse | None:
        if self.s3 is None:
            return None
        return await self.s3.fetch(request_id, key_id)

    async def fetch_conversation(self, request_id: str, key_id: str) -> tuple[StoredResponse, bytes] | None:
        """A Responses answer another instance stored, with its conversation (S3), unless deleted."""
        if self.s3 is None or await self.response_deleted(key_id, request_id):
            return None
        return await self.s3.fetch_conversation(request_id, key_id)

    def _tombstone(self, key_id: str, request_id: str) -> str:
        # Per key, like the stored answers: a request id another key reuses is another response.
        return f"{shared.namespace(self.config.redis)}:responses:deleted:{key_id}:{request_id}"

    async def delete_response(self, key_id: str, request_id: str, created_at: str) -> None:
        """A Responses DELETE reaches every copy: the S3 objects go, and a tombstone in Redis tells
        the other instances that their own SQLite copy is gone too (they check it on every read)."""
        if self._client is not None:
            await asyncio.wait_for(
                self._client.set(self._tombstone(key_id, request_id), b"1", ex=TOMBSTONE_TTL),
                SHARED_READ_WAIT,
            )
        if self.s3 is not None:
            await self.s3.delete(key_id, request_id, created_at)

    async def response_deleted(self, key_id: str, request_id: str) -> bool:
        """Whether a DELETE on any instance removed this response. Redis unreachable: False (the
        read is answered from what this instance holds rather than failing)."""
        if self._client is None:
            return False
        assert self.health is not None
        try:
            found = await asyncio.wait_for(
                self._client.exists(self._tombstone(key_id, request_id)), SHARED_READ_WAIT
            )
        except (redis.RedisError, OSError, TimeoutError) as e:
            self.health.failed("responses", e if not isinstance(e, TimeoutError) else TimeoutError("read"))
            return False
        self.health.ok("responses")
        return bool(found)

    def view(self) -> dict[str, Any]:
        """Redis and S3 state for /admin/status."""
        out: dict[str, Any] = {}
        if self.health is not None:
            out["redis"] = self.health.view()
            if self.ratesync is not None:
                out["redis"]["ratelimit"] = self.ratesync.view()
            if self.budgetsync is not None:
                out["redis"]["budgets"] = self.budgetsync.view()
            if self.keysync is not None:
                out["redis"]["keys"] = {"loaded": self.keysync.loaded, "applied": self.keysync.applied}
        else:
            out["redis"] = {"configured": False, "state": "local"}
        out["s3"] = self.s3.view() if self.s3 is not None else {"configured": False, "state": "sqlite"}
        return out
