"""The request pipeline after parsing: validate → admit → route → call (with failover) → price → record.

Wire formats (ensemble.api.*) turn HTTP bodies into an InferenceRequest and render what this module
returns; nothing here knows which format the client spoke.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import msgspec

from ensemble import telemetry
from ensemble.assembly import Assembler
from ensemble.auth import Authenticator
from ensemble.config.schema import Config, StreamTimeouts
from ensemble.errors import EnsembleError, ProviderError, RateLimited, UpstreamTimeout
from ensemble.providers.base import CallOptions, Provider, Target
from ensemble.ratelimit import Admission, Reservation
from ensemble.router import Router
from ensemble.storage.keys import KeyRecord, now_iso
from ensemble.types import (
    InferenceRequest,
    InferenceResponse,
    Performance,
    ProviderResult,
    RateLimitInfo,
    StreamDelta,
    TextBlock,
    Usage,
    UsageOut,
)
from ensemble.usage.pricing import format_cost, micro_dollars
from ensemble.usage.request_log import LogRecord, RequestLog
from ensemble.validate import DropRules, check_request

log = logging.getLogger("ensemble.gateway")

# How long an endpoint is avoided after it failed, when the provider gave no retry-after.
COOLDOWN_AFTER_429 = 1.0
COOLDOWN_AFTER_5XX = 2.0
COOLDOWN_AFTER_CONNECT_ERROR = 5.0


@dataclass(slots=True)
class CallContext:
    """One client request as the gateway sees it."""

    request_id: str
    key: KeyRecord
    started: float = field(default_factory=time.perf_counter)
    upstream_s: float = 0.0
    ttft_s: float | None = None
    target: Target | None = None
    reservation: Reservation | None = None
    rate_limit: RateLimitInfo | None = None
    recorded: bool = False
    model: str = ""  # the model the client asked for, once parsed (telemetry labels)


def estimate_prompt_tokens(request: InferenceRequest) -> int:
    """A cheap upper-ish estimate (4 characters a token) used only to reserve TPM at admission."""
    return max(1, sum(len(m.text()) for m in request.messages) // 4)


class Gateway:
    def __init__(
        self,
        config: Config,
        providers: list[Provider],
        admission: Admission,
        request_log: RequestLog | None,
    ) -> None:
        self.config = config
        self.providers = providers
        self.router = Router(providers)
        self.admission = admission
        self.request_log = request_log
        self._timeouts = sorted(
            ((k, v) for k, v in config.streaming_timeouts.items() if k != "default"),
            key=lambda kv: -len(kv[0]),
        )
        self._default_timeouts = config.streaming_timeouts["default"]
        self._call_options: dict[tuple[str, bool], CallOptions] = {}
        self.drop_rules = DropRules(config.parameter_validation)

    # -- stages --------------------------------------------------------------------------------

    def prepare(self, request: InferenceRequest, ctx: CallContext) -> list[Target]:
        """Everything that can refuse a request before any upstream call: returns the candidates."""
        ctx.model = request.model
        model = next(iter(self.router.models().get(request.model) or ()), None)
        check_request(request, model.models[request.model] if model else None)
        Authenticator.authorize_model(ctx.key, request.model)
        targets = self.router.candidates(request.model)
        self.drop_rules.apply(request)
        max_out = request.max_tokens or min(targets[0].model.max_output_tokens or 1024, 1024)
        ctx.reservation = self.admission.admit_key(ctx.key, estimate_prompt_tokens(request) + max_out)
        return targets

    def call_options(self, model: str, streaming: bool) -> CallOptions:
        opts = self._call_options.get((model, streaming))
        if opts is None:
            opts = self._call_options[(model, streaming)] = self._resolve_call_options(model, streaming)
        return opts

    def _resolve_call_options(self, model: str, streaming: bool) -> CallOptions:
        t: StreamTimeouts = self._default_timeouts
        for pattern, timeouts in self._timeouts:
            if fnmatch.fnmatchcase(model, pattern):
                t = timeouts
                break
        if streaming:
            return CallOptions(stall_timeout=t.stall_timeout, overall_timeout=t.overall_timeout)
        total = max(
            self.config.provider_timeouts.default, t.stall_timeout if t is not self._default_timeouts else 0
        )
        return CallOptions(stall_timeout=total, overall_timeout=total)

    @staticmethod
    def _cool_down(target: Target, error: ProviderError) -> None:
        if error.upstream_status == 429:
            pause = error.retry_after_s or COOLDOWN_AFTER_429
        elif error.code == "connect_error":
            pause = COOLDOWN_AFTER_CONNECT_ERROR
        else:
            pause = error.retry_after_s or COOLDOWN_AFTER_5XX
        target.endpoint.cooldown_until = max(
            target.endpoint.cooldown_until, time.monotonic() + min(pause, 300.0)
        )

    @staticmethod
    def _exhausted(errors: list[ProviderError]) -> EnsembleError:
        """The error for the client once every candidate failed with a retryable error."""
        limited = [e for e in errors if e.upstream_status in (429, 529)]
        if limited and len(limited) == len(errors):
            waits = [e.retry_after_s for e in limited if e.retry_after_s is not None]
            return RateLimited(
                "every endpoint serving this model is rate limited or overloaded",
                retry_after_s=min(waits) if waits else COOLDOWN_AFTER_429,
                code="all_endpoints_exhausted",
            )
        last = errors[-1]
        if isinstance(last, UpstreamTimeout):
            return last
        return ProviderError(
            f"every endpoint serving this model failed; last error: {last.message}",
            code=last.code,
            upstream_status=last.upstream_status,
        )

    # -- whole answers ---------------------------------------------------------------------------

    async def generate(self, request: InferenceRequest, ctx: CallContext) -> InferenceResponse:
        targets = self.prepare(request, ctx)
        opts = self.call_options(request.model, streaming=False)
        errors: list[ProviderError] = []
        for target in targets:
            ctx.target = target
            t0 = time.perf_counter()
            target.endpoint.in_flight += 1
            try:
                result = await target.provider.complete(request, target, opts)
            except ProviderError as e:
                ctx.upstream_s += time.perf_counter() - t0
                _count_upstream_error(target, e)
                if not e.retryable:
                    raise
                self._cool_down(target, e)
                errors.append(e)
                log.warning("endpoint %s failed (%s); trying the next candidate", target.endpoint.id, e.code)
                continue
            finally:
                target.endpoint.in_flight -= 1
            ctx.upstream_s += time.perf_counter() - t0
            ctx.ttft_s = ctx.upstream_s
            return self.finish(request, ctx, result)
        raise self._exhausted(errors)

    def finish(
        self, request: InferenceRequest, ctx: CallContext, result: ProviderResult
    ) -> InferenceResponse:
        """Price, reconcile the reservation, build the native response and record it."""
        target = ctx.target
        assert target is not None
        usage = result.usage
        if ctx.reservation is not None:  # reconcile first so the rate-limit info is current
            self.admission.reconcile(ctx.reservation, usage.input_tokens + usage.output_tokens)
            ctx.reservation = None
        ctx.rate_limit = self.admission.info(ctx.key)
        cost = target.price.cost(usage)
        elapsed = time.perf_counter() - ctx.started
        response = InferenceResponse(
            id=ctx.request_id,
            model=request.model,
            provider=target.provider.name,
            endpoint_id=target.endpoint.id,
            blocks=result.blocks,
            content="".join(b.text for b in result.blocks if isinstance(b, TextBlock)),
            finish_reason=result.finish_reason,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cached_prompt_tokens=usage.cached_tokens,
            cache_creation_tokens=usage.cache_creation_tokens,
            reasoning_tokens=usage.reasoning_tokens,
            cost=format_cost(cost),
            cost_micro_dollars=micro_dollars(cost),
            usage=UsageOut(
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cached_tokens=usage.cached_tokens,
                cache_creation_tokens=usage.cache_creation_tokens,
                reasoning_tokens=usage.reasoning_tokens,
            ),
            processing_time_ms=round(elapsed * 1000, 3),
            performance=Performance(
                ttft_ms=round((ctx.ttft_s or 0.0) * 1000, 3),
                upstream_ms=round(ctx.upstream_s * 1000, 3),
                overhead_ms=round(max(elapsed - ctx.upstream_s, 0.0) * 1000, 3),
            ),
            rate_limit=ctx.rate_limit,
        )
        self.record(
            ctx, request.model, 200, usage=usage, cost_micro=response.cost_micro_dollars, response=response
        )
        return response

    def record(
        self,
        ctx: CallContext,
        model: str,
        http_status: int,
        *,
        usage: Usage | None = None,
        cost_micro: int = 0,
        response: InferenceResponse | None = None,
        error: str = "",
    ) -> None:
        """Exactly one log/usage record per authenticated inference request (idempotent per ctx).

        Whatever was reserved is reconciled against the usage actually recorded (0 when none)."""
        if ctx.recorded:
            return
        ctx.recorded = True
        usage = usage or Usage()
        if ctx.reservation is not None:
            self.admission.reconcile(ctx.reservation, usage.input_tokens + usage.output_tokens)
            ctx.reservation = None
        metrics = telemetry.metrics
        if metrics is not None:
            metrics.finished(ctx, model, usage, cost_micro, time.perf_counter() - ctx.started)
        if self.request_log is None:
            return
        target = ctx.target
        self.request_log.record(
            LogRecord(
                request_id=ctx.request_id,
                key_id=ctx.key.key_id,
                model=model,
                provider=target.provider.name if target else "",
                endpoint_id=target.endpoint.id if target else "",
                status="success" if response is not None else "error",
                http_status=http_status,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cached_tokens=usage.cached_tokens,
                cache_creation_tokens=usage.cache_creation_tokens,
                reasoning_tokens=usage.reasoning_tokens,
                cost_micro_dollars=cost_micro,
                latency_ms=round((time.perf_counter() - ctx.started) * 1000, 3),
                error=error[:500],
                created_at=now_iso(),
                response_body=msgspec.json.encode(response) if response is not None else None,
            )
        )

    # -- streams ---------------------------------------------------------------------------------

    async def open_stream(self, request: InferenceRequest, ctx: CallContext) -> LiveStream:
        """Connect and wait for the first delta, failing over while nothing reached the client."""
        targets = self.prepare(request, ctx)
        opts = self.call_options(request.model, streaming=True)
        errors: list[ProviderError] = []
        for target in targets:
            ctx.target = target
            t0 = time.perf_counter()
            iterator = target.provider.stream(request, target, opts).__aiter__()
            try:
                first = await iterator.__anext__()
            except StopAsyncIteration:
                first = None
            except ProviderError as e:
                ctx.upstream_s += time.perf_counter() - t0
                _count_upstream_error(target, e)
                await _close(iterator)
                if not e.retryable:
                    raise
                self._cool_down(target, e)
                errors.append(e)
                log.warning(
                    "endpoint %s failed before streaming (%s); trying the next", target.endpoint.id, e.code
                )
                continue
            except BaseException:
                await _close(iterator)
                raise
            ctx.ttft_s = time.perf_counter() - t0
            return LiveStream(self, request, ctx, iterator, first, t0)
        raise self._exhausted(errors)


def _count_upstream_error(target: Target, error: ProviderError) -> None:
    metrics = telemetry.metrics
    if metrics is not None:
        metrics.upstream_error(target.provider.name, target.endpoint.id, error)


async def _close(iterator: AsyncIterator[StreamDelta]) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        try:
            await aclose()
        except Exception:  # closing a failed stream must not mask the original error
            log.debug("error while closing an upstream stream", exc_info=True)


class LiveStream:
    """An answer being streamed: iterate for deltas, then `response()` for the priced whole."""

    def __init__(
        self,
        gateway: Gateway,
        request: InferenceRequest,
        ctx: CallContext,
        iterator: AsyncIterator[StreamDelta],
        first: StreamDelta | None,
        t0: float,
    ) -> None:
        self.gateway = gateway
        self.request = request
        self.ctx = ctx
        self.assembler = Assembler()
        self._iterator = iterator
        self._first = first
        self._t0 = t0
        self.done = False

    @property
    def target(self) -> Target:
        assert self.ctx.target is not None
        return self.ctx.target

    async def deltas(self) -> AsyncIterator[StreamDelta]:
        endpoint = self.target.endpoint
        endpoint.in_flight += 1
        try:
            if self._first is not None:
                self.assembler.feed(self._first)
                yield self._first
            async for delta in self._iterator:
                self.assembler.feed(delta)
                yield delta
            self.done = True
        finally:
            endpoint.in_flight -= 1
            self.ctx.upstream_s += time.perf_counter() - self._t0

    def response(self) -> InferenceResponse:
        return self.gateway.finish(self.request, self.ctx, self.assembler.result())

    def fail(self, error: EnsembleError) -> None:
        """Record a stream that broke after it started; usage streamed so far is kept."""
        ctx = self.ctx
        if ctx.recorded:
            return
        if self.assembler.usage.output_tokens == 0 and self.assembler.output_chars:
            # The provider never reported usage: count what the client received.
            self.assembler.usage.output_tokens = max(1, self.assembler.output_chars // 4)
        if self.assembler.usage.input_tokens == 0:
            self.assembler.usage.input_tokens = estimate_prompt_tokens(self.request)
        usage = self.assembler.usage
        if isinstance(error, ProviderError):
            _count_upstream_error(self.target, error)
        cost = self.target.price.cost(usage)
        self.gateway.record(
            ctx,
            self.request.model,
            error.status,
            usage=usage,
            cost_micro=micro_dollars(cost),
            error=error.message,
        )

    async def aclose(self) -> None:
        await _close(self._iterator)


async def drain_in_background(stream: LiveStream) -> None:
    """`on_client_disconnect: complete`: finish the upstream call, price and store the answer."""
    try:
        async for _ in stream.deltas():
            pass
        stream.response()
    except EnsembleError as e:
        stream.fail(e)
    except asyncio.CancelledError:
        stream.fail(ProviderError("the gateway shut down before the answer completed", code="shutdown"))
        raise
