"""Provider batch APIs: Anthropic's Message Batches (create, poll, results, cancel).

The request body of each item is built by the provider's own wire format (`WireFormat.build`, the
same code that serves `/v1/messages`), and each result message is parsed by its `parse`, so a batch
answer is exactly what the interactive path would have produced — priced at the batch discount.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import aiohttp
import msgspec
import orjson

from ensemble import telemetry
from ensemble.api import native
from ensemble.batch.results import errored, succeeded
from ensemble.batch.store import BatchStore, ClaimedItem, now_ms
from ensemble.errors import EnsembleError, ProviderError
from ensemble.gateway import CallContext
from ensemble.providers.base import Endpoint, HttpProvider, Provider, Target
from ensemble.router import RouteDecision
from ensemble.storage import keys
from ensemble.storage.keys import KeyRecord
from ensemble.types import InferenceRequest, Usage
from ensemble.usage.pricing import Price

if TYPE_CHECKING:
    from ensemble.batch.budget import BatchBudgets
    from ensemble.server.runtime import Runtime

log = logging.getLogger("ensemble.batch")
PROVIDER_BATCH = RouteDecision("provider_batch")

BATCH_DISCOUNT = Decimal("0.5")  # Anthropic bills Message Batches at half the standard price
MAX_PER_UPSTREAM_BATCH = 10_000
POLL_MIN_S, POLL_MAX_S = 0.5, 60.0
RETRY_MS = 5000
API_VERSION = "2023-06-01"


class BatchPrice(Price):
    """A model's price with the provider's batch discount applied to every cost."""

    __slots__ = ()

    @classmethod
    def of(cls, price: Price) -> BatchPrice:
        p = cls.__new__(cls)
        p.input, p.output, p.cache_read, p.cache_write = (
            price.input,
            price.output,
            price.cache_read,
            price.cache_write,
        )
        p.worst_input = price.worst_input * float(BATCH_DISCOUNT)  # what a budget reserves
        p.output_rate = price.output_rate * float(BATCH_DISCOUNT)
        return p

    def cost(self, usage: Usage, *, discount: Decimal | None = None) -> Decimal:
        return super().cost(usage, discount=BATCH_DISCOUNT if discount is None else discount * BATCH_DISCOUNT)


def _parse_time(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class ProviderBatches:
    def __init__(
        self, rt: Runtime, store: BatchStore, owner: str, lease_ms: int, budget: BatchBudgets
    ) -> None:
        self.rt = rt
        self.store = store
        self.budget = budget  # items settle their share of the batch's budget reservation
        self.owner = owner
        self.lease_ms = lease_ms
        self._session: aiohttp.ClientSession | None = None

    @staticmethod
    def supports(provider: Provider) -> bool:
        return provider.type == "anthropic" and isinstance(provider, HttpProvider)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            timeout = aiohttp.ClientTimeout(
                total=self.rt.config.provider_timeouts.default,
                connect=self.rt.config.provider_timeouts.connect,
            )
            self._session = aiohttp.ClientSession(timeout=timeout)
        return self._session

    # -- HTTP ------------------------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        provider: HttpProvider,
        url: str,
        headers: dict[str, str],
        body: bytes | None = None,
    ) -> tuple[int, bytes, dict[str, str]]:
        try:
            async with self.session().request(
                method, url, data=body, headers=headers, allow_redirects=False
            ) as resp:
                return resp.status, await resp.read(), dict(resp.headers)
        except (aiohttp.ClientError, TimeoutError) as e:
            raise ProviderError(
                f"provider batch API unreachable ({type(e).__name__})", code="connect_error", retryable=True
            ) from e

    async def _json(
        self,
        method: str,
        provider: HttpProvider,
        url: str,
        headers: dict[str, str],
        body: bytes | None = None,
    ) -> dict[str, Any]:
        status, payload, resp_headers = await self._call(method, provider, url, headers, body)
        if status >= 400:
            raise provider.wire.classify(status, resp_headers, payload)
        data = orjson.loads(payload)
        if not isinstance(data, dict):
            raise ProviderError("unexpected batch API answer", code="bad_upstream_response")
        return data

    @staticmethod
    def _headers(endpoint: Endpoint, template: dict[str, str]) -> dict[str, str]:
        keep = {k: v for k, v in template.items() if k.lower() in ("anthropic-version", "anthropic-beta")}
        return {"x-api-key": endpoint.api_key, "content-type": "application/json", **keep}

    def _provider(self, name: str) -> HttpProvider | None:
        for p in self.rt.providers:
            if p.name == name and isinstance(p, HttpProvider):
                return p
        return None

    @staticmethod
    def _endpoint(provider: Provider) -> Endpoint | None:
        now = time.monotonic()
        usable = [e for e in provider.endpoints if e.has_credential]
        ready = [e for e in usable if not e.cooling_down(now)]
        pool = ready or usable
        return pool[0] if pool else None

    def _target(
        self, provider: HttpProvider, endpoint: Endpoint, model: str, discounted: bool
    ) -> Target | None:
        config = provider.models.get(model)
        if config is None:
            return None
        price = provider.prices[model]
        return Target(provider, endpoint, config, BatchPrice.of(price) if discounted else price)

    # -- one runner pass -------------------------------------------------------------------------

    async def tick(self) -> None:
        await self._submit()
        await self._poll()

    async def _submit(self) -> None:
        items = await self.store.claim(self.owner, "provider_batch", MAX_PER_UPSTREAM_BATCH, self.lease_ms)
        if not items:
            return
        assert self.rt.gateway is not None
        groups: dict[tuple[str, str], list[ClaimedItem]] = defaultdict(list)
        for item in items:
            first = next(iter(self.rt.gateway.router.models().get(item.model) or ()), None)
            groups[(item.batch_id, first.name if first else "")].append(item)
        for (_batch_id, provider_name), group in groups.items():
            await self._submit_group(provider_name, group)

    async def _submit_group(self, provider_name: str, group: list[ClaimedItem]) -> None:
        provider = self._provider(provider_name)
        endpoint = self._endpoint(provider) if provider else None
        if provider is None or endpoint is None:
            error = ProviderError("no usable endpoint for the provider's batch API", code="no_endpoint")
            for item in group:
                await self._settle(item, "errored", error=error)
            return
        requests: list[dict[str, Any]] = []
        accepted: list[ClaimedItem] = []
        template: dict[str, str] = {}
        url = ""
        for item in group:
            target = self._target(provider, endpoint, item.model, discounted=False)
            try:
                request = msgspec.json.decode(item.request, type=InferenceRequest)
                request.stream = False
                if target is None:
                    raise ProviderError(f"model {item.model!r} is no longer served by {provider_name}")
                url, template, body = provider.wire.build(request, target, stream=False)
            except EnsembleError as e:
                await self._settle(item, "errored", error=e)
                continue
            requests.append({"custom_id": f"item-{item.idx}", "params": orjson.loads(body)})
            accepted.append(item)
        if not accepted:
            return
        batches_url = url.rsplit("/v1/messages", 1)[0] + "/v1/messages/batches"
        try:
            created = await self._json(
                "POST",
                provider,
                batches_url,
                self._headers(endpoint, template),
                orjson.dumps({"requests": requests}),
            )
            upstream_id = str(created["id"])
        except (ProviderError, KeyError, ValueError) as e:
            error = e if isinstance(e, ProviderError) else ProviderError("unexpected batch API answer")
            if error.retryable:
                log.warning("creating a %s batch failed (%s); retrying later", provider_name, error.code)
                wait = int((error.retry_after_s or RETRY_MS / 1000) * 1000)
                for item in accepted:
                    await self.store.requeue(item, self.owner, now_ms() + wait)
            else:
                for item in accepted:
                    await self._settle(item, "errored", error=error)
            return
        await self.store.submitted(
            upstream_id, accepted, self.owner, provider_name, endpoint.id, int(POLL_MIN_S * 1000)
        )
        log.info("submitted %d item(s) to %s batch %s", len(accepted), provider_name, upstream_id)

    async def _poll(self) -> None:
        for upstream_id, batch_id, provider_name, endpoint_id, cancel in await self.store.claim_upstream(
            self.owner, 20, self.lease_ms
        ):
            try:
                await self._poll_one(upstream_id, provider_name, endpoint_id, cancel)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning(
                    "polling %s batch %s (for %s) failed: %s", provider_name, upstream_id, batch_id, e
                )
                await self.store.upstream_polled(
                    upstream_id, self.owner, now_ms() + RETRY_MS, cancel_sent=False
                )

    async def _poll_one(self, upstream_id: str, provider_name: str, endpoint_id: str, cancel: bool) -> None:
        provider = self._provider(provider_name)
        endpoint = next((e for e in provider.endpoints if e.id == endpoint_id), None) if provider else None
        if provider is None or endpoint is None:
            raise ProviderError(f"endpoint {endpoint_id} of {provider_name} is no longer configured")
        headers = self._headers(endpoint, {"anthropic-version": API_VERSION})
        base = f"{endpoint.base_url}/v1/messages/batches/{upstream_id}"
        if cancel:
            await self._json("POST", provider, f"{base}/cancel", headers, b"")
        info = await self._json("GET", provider, base, headers)
        if info.get("processing_status") != "ended":
            created = _parse_time(info.get("created_at")) or time.time()
            delay = min(max((time.time() - created) / 10, POLL_MIN_S), POLL_MAX_S)
            await self.store.upstream_polled(
                upstream_id, self.owner, now_ms() + int(delay * 1000), cancel_sent=cancel
            )
            return
        status, payload, resp_headers = await self._call("GET", provider, f"{base}/results", headers)
        if status >= 400:
            raise provider.wire.classify(status, resp_headers, payload)
        results: dict[str, dict[str, Any]] = {}
        for line in payload.splitlines():
            if line.strip():
                entry = orjson.loads(line)
                results[str(entry.get("custom_id"))] = entry.get("result") or {}
        for item in await self.store.upstream_items(upstream_id):
            await self.store.take_submitted(item, self.owner)
            await self._collect(item, provider, endpoint, results.get(f"item-{item.idx}"))
        await self.store.upstream_collected(upstream_id)

    async def _collect(
        self, item: ClaimedItem, provider: HttpProvider, endpoint: Endpoint, result: dict[str, Any] | None
    ) -> None:
        kind = (result or {}).get("type")
        if kind in ("canceled", "expired"):
            await self._settle(item, str(kind))
            return
        if kind != "succeeded":
            err = ((result or {}).get("error") or {}).get("error") or {}
            message = str(err.get("message") or "the provider reported no result for this item")
            await self._settle(
                item, "errored", error=ProviderError(message, code=str(err.get("type") or "errored"))
            )
            return
        gateway = self.rt.gateway
        assert gateway is not None
        target = self._target(provider, endpoint, item.model, discounted=True)
        key = await self._key(item.key_id)
        try:
            if target is None or key is None:
                raise ProviderError("the model or the API key of this item is gone", code="gone")
            request = msgspec.json.decode(item.request, type=InferenceRequest)
            parsed = provider.wire.parse(orjson.dumps(result.get("message") or {}))  # type: ignore[union-attr]
        except (EnsembleError, ValueError, KeyError, TypeError) as e:
            error = e if isinstance(e, EnsembleError) else ProviderError("unparseable batch result")
            await self._settle(item, "errored", error=error)
            return
        ctx = CallContext(item.request_id, key, budget=await self.budget.take(item.batch_id, item.idx))
        ctx.target = target
        ctx.route = PROVIDER_BATCH  # sent in the provider's own batch, not through the router
        ctx.model = request.model
        response = gateway.finish(request, ctx, parsed)  # prices (discounted), records usage once
        await self._finished(item, "succeeded", succeeded(native.render_response(response)))

    async def _key(self, key_id: str) -> KeyRecord | None:
        """The key the item belongs to, as stored now (revoked keys stop their batches)."""
        return await keys.fetch_key(self.store.conn, key_id)

    async def _settle(self, item: ClaimedItem, state: str, error: EnsembleError | None = None) -> None:
        """A final state that is not a success (nothing charged); errors are recorded in the request
        log once."""
        hold = await self.budget.take(item.batch_id, item.idx)
        if hold is not None:
            self.budget.budgets.settle(hold, 0)
        if error is not None:
            gateway = self.rt.gateway
            key = await self._key(item.key_id)
            if gateway is not None and key is not None:
                gateway.record(
                    CallContext(item.request_id, key), item.model, error.status, error=error.message
                )
            await self._finished(item, state, errored(error, item.request_id))
        else:
            await self._finished(item, state, orjson.dumps({"type": state}))

    async def _finished(self, item: ClaimedItem, state: str, result: bytes) -> None:
        if await self.store.finish(item, self.owner, state, result):
            metrics = telemetry.metrics
            if metrics is not None:
                metrics.batch_items.labels(state).inc()
