"""Batch processing in each worker: submission, the rate-limit fallback, and the background runner.

Items of a batch take one of two routes, chosen at submission from the model's first provider:

- `provider_batch` (Anthropic models): the runner submits them to the provider's Message Batches API,
  polls it, and collects the results; their cost carries the provider's batch discount (50%). On a
  spend budget their worst case is reserved at submission (batch/budget.py).
- `gateway` (everything else): the runner sends them through the ordinary gateway path, at most
  `LOW_PRIORITY_CONCURRENCY` at a time per worker, so interactive traffic is never queued behind a
  batch; an item refused with 429 goes back to the queue until the limit frees up, never dropped.

All state is in SQLite (`BatchStore`): a restart, or another worker, picks up where this one left off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import secrets
import socket
from typing import TYPE_CHECKING

import msgspec

from ensemble import telemetry
from ensemble.api import native
from ensemble.auth import Authenticator
from ensemble.batch.budget import BatchBudgets
from ensemble.batch.provider import ProviderBatches
from ensemble.batch.results import errored, succeeded
from ensemble.batch.store import BatchStore, ClaimedItem, NewItem, now_ms
from ensemble.errors import (
    AuthenticationFailed,
    BudgetExceeded,
    EnsembleError,
    InvalidRequest,
    Overloaded,
    RateLimited,
)
from ensemble.gateway import CallContext
from ensemble.storage import database, keys
from ensemble.storage.keys import KeyRecord
from ensemble.types import InferenceRequest
from ensemble.validate import check_request

if TYPE_CHECKING:
    from ensemble.server.http import Request
    from ensemble.server.runtime import Runtime

log = logging.getLogger("ensemble.batch")

LOW_PRIORITY_CONCURRENCY = 2  # gateway-path batch calls in flight per worker
TICK = 0.25  # seconds between runner passes (claims are cheap indexed UPDATEs)
EXPIRY_MS = 24 * 3600 * 1000  # like Anthropic: what has not run within 24 h expires
RETRY_MIN_MS = 1000  # back-off floor after a 429
MAX_ITEMS = 100_000

_encode = msgspec.json.Encoder().encode


def new_batch_id(prefix: str = "batch_") -> str:
    return prefix + secrets.token_hex(12)


def accepts_async(prefer: str | None) -> bool:
    """Whether a `Prefer` header carries the `respond-async` preference (comma-separated list)."""
    if not prefer:
        return False
    return any(p.split(";", 1)[0].strip().lower() == "respond-async" for p in prefer.split(","))


class BatchService:
    def __init__(self, rt: Runtime, store: BatchStore) -> None:
        self.rt = rt
        self.store = store
        self.config = rt.config.batch
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        timeouts = [rt.config.provider_timeouts.default] + [
            t.stall_timeout for t in rt.config.streaming_timeouts.values()
        ]
        self.lease_ms = int((max(timeouts) + 60) * 1000)
        self.running: set[asyncio.Task[None]] = set()
        self.budget = BatchBudgets(rt, store.conn)
        store.on_released = self.budget.release
        self.provider_batches: ProviderBatches | None = None
        self._task: asyncio.Task[None] | None = None
        self._keys: dict[str, KeyRecord] = {}

    @classmethod
    async def open(cls, rt: Runtime) -> BatchService:
        # Its own connection: the request log's transactions on the shared one must not interleave.
        store = BatchStore(await database.connect(rt.config.database.path))
        service = cls(rt, store)
        service.provider_batches = ProviderBatches(rt, store, service.owner, service.lease_ms, service.budget)
        return service

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="batch-runner")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for task in list(self.running):
            task.cancel()
        if self.running:
            await asyncio.wait(self.running, timeout=5)
        with contextlib.suppress(Exception):
            await self.store.release(self.owner)  # others (or our restart) take over at once
        if self.provider_batches is not None:
            await self.provider_batches.close()
        await self.store.close()

    # -- submission ------------------------------------------------------------------------------

    def route_for(self, model: str) -> str:
        assert self.rt.gateway is not None
        providers = self.rt.gateway.router.models().get(model) or ()
        first = next(iter(providers), None)
        if first is not None and self.provider_batches is not None and self.provider_batches.supports(first):
            return "provider_batch"
        return "gateway"

    def check_item(self, key: KeyRecord, request: InferenceRequest) -> None:
        """What `Gateway.prepare` refuses up front, minus admission (that happens when it runs)."""
        assert self.rt.gateway is not None
        router = self.rt.gateway.router
        provider = next(iter(router.models().get(request.model) or ()), None)
        check_request(request, provider.models[request.model] if provider else None)
        Authenticator.authorize_model(key, request.model)
        router.candidates(request.model)

    async def submit(
        self,
        key: KeyRecord,
        items: list[tuple[str, InferenceRequest]],
        *,
        origin: str,
        prefix: str = "batch_",
    ) -> str:
        """Store a batch; its provider-batch items' worst case is reserved first (402 when it does not fit)."""
        batch_id = new_batch_id(prefix)
        routes = [self.route_for(request.model) for _, request in items]
        to_provider = [(i, r) for i, (_, r) in enumerate(items) if routes[i] == "provider_batch"]
        now = now_ms()
        async with self.budget.reserved(key, to_provider, now) as holds:
            new = [
                NewItem(
                    custom_id, f"{batch_id}-{i}", request.model, _encode(request), routes[i], holds.get(i)
                )
                for i, (custom_id, request) in enumerate(items)
            ]
            await self.store.create(
                batch_id, key.key_id, origin, new, ready_ms=now, expires_ms=now + EXPIRY_MS
            )
        return batch_id

    async def fall_back(
        self, req: Request, key: KeyRecord, request: InferenceRequest, ctx: CallContext, error: EnsembleError
    ) -> bool:
        """`batch.rate_limit_fallback`: instead of a 429 because every endpoint is exhausted, queue the
        request into a batch and answer 202 with its request id. True when it did (and answered).

        Only for clients that said they accept an asynchronous answer (`Prefer: respond-async`,
        RFC 7240): a client expecting the answer in the response must keep getting the 429 it can
        retry on, not a 202 it would mistake for one (the official clients and SDKs among them)."""
        if not (
            self.config.rate_limit_fallback
            and isinstance(error, RateLimited | Overloaded)
            and error.code in ("all_endpoints_exhausted", "upstream_overloaded")
            and req.family == "native"
            and not request.stream
            and accepts_async(req.header("prefer"))
        ):
            return False
        if ctx.reservation is not None:  # the queued run is admitted (and recorded) when it runs
            self.rt.admission.reconcile(ctx.reservation, 0)
            ctx.reservation = None
        # The queued run reserves its own budget when it runs through the gateway; sent in a
        # provider batch, it holds its batch-price worst case from now on.
        if self.rt.gateway is not None:
            self.rt.gateway.release_budget(ctx)
        request_id = req.request_id
        route = self.route_for(request.model)
        now = now_ms()
        try:
            async with self.budget.reserved(
                key, [(0, request)] if route == "provider_batch" else [], now
            ) as holds:
                item = NewItem(request_id, request_id, request.model, _encode(request), route, holds.get(0))
                batch_id = await self.store.join_fallback(
                    new_batch_id(),
                    key.key_id,
                    item,
                    window_ms=int(self.config.collection_window * 1000),
                    max_size=max(self.config.max_batch_size, 1),
                    expires_ms=now + EXPIRY_MS,
                    provider=ctx.target.provider.name if ctx.target is not None else "",  # the likely one
                )
        except BudgetExceeded:
            return False  # the 429 it had, rather than a queued run its budget cannot pay for
        ctx.recorded = True  # no 429 record: the request is not over
        metrics = telemetry.metrics
        if metrics is not None:
            metrics.fallback_queued.inc()
        log.info("request %s rate limited on every endpoint: queued into batch %s", request_id, batch_id)
        body = {
            "request_id": request_id,
            "status": "pending",
            "batch_id": batch_id,
            "status_url": f"/api/v1/status/{request_id}",
            "retrieve_url": f"/api/v1/retrieve/{request_id}",
            "message": "every endpoint serving this model is rate limited or overloaded; the request was "
            "queued and "
            "will run as capacity frees up",
        }
        headers = [
            ("location", body["status_url"]),
            (
                "retry-after",
                str(max(1, math.ceil(max(self.config.collection_window, error.retry_after_s or 0.0)))),
            ),
            ("preference-applied", "respond-async"),
        ]
        req.send(202, msgspec.json.encode(body), headers=headers)
        return True

    # -- the runner ------------------------------------------------------------------------------

    async def _run(self) -> None:
        passes = 0
        while True:
            try:
                await self.tick(expire=passes % 40 == 0)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("batch runner pass failed; retrying")
                await asyncio.sleep(1.0)
            passes += 1
            await asyncio.sleep(TICK)

    async def tick(self, expire: bool = False) -> None:
        if expire:
            await self.store.expire()
        free = LOW_PRIORITY_CONCURRENCY - len(self.running)
        if free > 0:
            for item in await self.store.claim(self.owner, "gateway", free, self.lease_ms):
                task = asyncio.get_running_loop().create_task(
                    self._run_item(item), name=f"batch-{item.request_id}"
                )
                self.running.add(task)
                task.add_done_callback(self.running.discard)
        if self.provider_batches is not None:
            await self.provider_batches.tick()

    async def key(self, key_id: str) -> KeyRecord | None:
        """The key a batch belongs to, as stored now (revoked keys stop their batches)."""
        return await keys.fetch_key(self.store.conn, key_id)

    async def _run_item(self, item: ClaimedItem) -> None:
        gateway = self.rt.gateway
        assert gateway is not None
        key = await self.key(item.key_id)
        try:
            request = msgspec.json.decode(item.request, type=InferenceRequest)
        except msgspec.ValidationError:  # cannot happen for rows we wrote; never crash the runner on it
            await self.store.finish(
                item,
                self.owner,
                "errored",
                errored(InvalidRequest("stored request unreadable"), item.request_id),
            )
            return
        if key is None or key.status != "active":
            error = AuthenticationFailed("the API key that submitted this batch is no longer active")
            await self.store.finish(item, self.owner, "errored", errored(error, item.request_id))
            return
        ctx = CallContext(item.request_id, key)
        try:
            response = await gateway.generate(request, ctx)
        except RateLimited as e:
            # Not an answer: back to the queue, recorded once when it finally runs.
            if ctx.reservation is not None:
                self.rt.admission.reconcile(ctx.reservation, 0)
                ctx.reservation = None
            wait_ms = max(int(e.retry_after_s * 1000), RETRY_MIN_MS)
            await self.store.requeue(item, self.owner, now_ms() + wait_ms)
            return
        except asyncio.CancelledError:
            if ctx.reservation is not None:
                self.rt.admission.reconcile(ctx.reservation, 0)
            raise  # shutdown: `close` releases the lease, the item runs again
        except EnsembleError as e:
            gateway.record(ctx, request.model, e.status, error=e.message)
            await self._finished(item, "errored", errored(e, item.request_id))
            return
        except Exception as e:
            log.exception("batch item %s failed unexpectedly", item.request_id)
            internal = EnsembleError(f"internal error ({type(e).__name__})")
            gateway.record(ctx, request.model, 500, error=internal.message)
            await self._finished(item, "errored", errored(internal, item.request_id))
            return
        await self._finished(item, "succeeded", succeeded(native.render_response(response)))

    async def _finished(self, item: ClaimedItem, state: str, result: bytes) -> None:
        if await self.store.finish(item, self.owner, state, result):
            metrics = telemetry.metrics
            if metrics is not None:
                metrics.batch_items.labels(state).inc()
        else:
            log.warning(
                "batch item %s finished after its lease was taken over; result dropped", item.request_id
            )
