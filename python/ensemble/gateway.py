"""The request pipeline after parsing: validate → admit → route → call (with failover) → price → record.

Wire formats (ensemble.api.*) turn HTTP bodies into an InferenceRequest and render what this module
returns; nothing here knows which format the client spoke.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TypeVar, cast

import msgspec

from ensemble import catalogue, reasoning, telemetry
from ensemble.assembly import Assembler
from ensemble.auth import Authenticator
from ensemble.budget.cost import Rates, embedding_worst_case_micro, worst_case_micro
from ensemble.budget.ledger import Budgets, Hold
from ensemble.call_path import CallPath, DirectCalls
from ensemble.config.schema import Config, StreamTimeouts
from ensemble.errors import (
    BudgetExceeded,
    EnsembleError,
    InvalidRequest,
    Overloaded,
    ProviderError,
    RateLimited,
    UpstreamTimeout,
)
from ensemble.providers.base import CallOptions, Provider, RawBatch, Target
from ensemble.providers.embedding_wire import estimated_tokens
from ensemble.ratelimit import Admission, EndpointLimits, Reservation
from ensemble.router import Candidate, RouteDecision, RoutePlan, Router
from ensemble.storage.keys import KeyRecord, now_iso
from ensemble.types import (
    EmbeddingRequest,
    EmbeddingResponse,
    EmbeddingResult,
    InferenceRequest,
    InferenceResponse,
    Performance,
    ProviderResult,
    RateLimitInfo,
    RedactedThinkingDelta,
    ServerToolDelta,
    StreamDelta,
    TextBlock,
    TextDelta,
    ThinkingDelta,
    ToolCallArgs,
    ToolCallStart,
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
MAX_FAILURE_COOLDOWN = 30.0


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
    route: RouteDecision | None = None
    # The endpoint admission of the current attempt: (limits, reserved tokens, admitted at ms).
    endpoint_reservation: tuple[EndpointLimits, int, int] | None = None
    budget: Hold | None = None  # the worst-case cost reserved on the key's and customer's budgets
    # The client's stream format when it could take a same-format provider's bytes unchanged
    # (openai, anthropic, gemini; the route decides, each attempt's provider confirms).
    passthrough: str | None = None
    # The client's stream format renders one event per upstream event from TextRuns (the merged
    # text of a read with its events' ends), so providers may hand those.
    event_runs: bool = False
    store: bool = True  # keep the answer for retrieval (the Responses API's `store: false` says no)
    # What an ingress keeps beside the answer to continue the conversation later (Responses
    # `previous_response_id`: the canonical input and the parameters the answer echoes).
    conversation: bytes | None = None


T = TypeVar("T")
R = TypeVar("R")  # what one call asks for: an InferenceRequest, or an EmbeddingRequest
# One upstream attempt of the failover loop: (request, ctx, target, options, start time) -> answer.
Attempt = Callable[[R, CallContext, Target, CallOptions, float], Awaitable[T]]


class Failover:
    """What happened to each candidate of one request, for the error when all are exhausted."""

    __slots__ = ("attempts", "errors", "failing_wait_ms", "limited", "overloaded", "too_big", "wait_ms")

    def __init__(self, plan: RoutePlan) -> None:
        self.errors: list[ProviderError] = []
        self.attempts = 0
        self.too_big = 0  # candidates whose TPM limit is below this one request's tokens
        # Soonest time (ms from now) some candidate frees up: skipped rate-limit cool-downs and limits.
        self.wait_ms = plan.cooling_wait_ms
        self.limited = plan.cooling_wait_ms > 0
        # Soonest end of a cool-down after repeated upstream failures (an outage, not a limit).
        self.failing_wait_ms = plan.failing_wait_ms
        # Some candidate said it is overloaded (Anthropic 529), now or in a cool-down it is still in.
        self.overloaded = plan.overloaded_wait_ms > 0
        if self.overloaded:
            self.wait_ms = (
                plan.overloaded_wait_ms if self.wait_ms <= 0 else min(self.wait_ms, plan.overloaded_wait_ms)
            )

    def skip(self, wait_ms: int, *, overloaded: bool = False) -> None:
        if overloaded:
            self.overloaded = True
        else:
            self.limited = True
        self.wait_ms = wait_ms if self.wait_ms <= 0 else min(self.wait_ms, wait_ms)


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
        self.admission = admission
        self.request_log = request_log
        self.budgets = Budgets()  # the runtime's, once it has loaded keys and customers
        # Called with the request id once its record is written (the in-flight index forgets it).
        self.on_recorded: Callable[[str], None] | None = None
        self.clock: Callable[[], float] = time.monotonic  # stall detection's time source (seconds)
        self.calls: CallPath = DirectCalls()  # tracing wraps it (telemetry/tracing.py)
        self._configure(config, providers, None)

    def reconfigure(self, config: Config, providers: list[Provider]) -> None:
        """Serve a reloaded config from the next request on (docs/configuration.md). Requests in
        flight finish with the providers, prices and rules they started with. Counters carry
        over: the router inherits the affinity table, endpoint state lives in the Endpoint
        objects the caller reuses, rate-limit windows in Admission."""
        self._configure(config, providers, self.router)

    def _configure(self, config: Config, providers: list[Provider], previous: Router | None) -> None:
        self.config = config
        self.providers = providers
        for p in providers:
            p.on_headers = self._observe_headers
            p.native_streams = config.server.native_streams
        self.router = Router(providers, config.cache, self.admission, self.admission.clock, previous=previous)
        self._timeouts = sorted(
            ((k, v) for k, v in config.streaming_timeouts.items() if k != "default"),
            key=lambda kv: -len(kv[0]),
        )
        self._default_timeouts = config.streaming_timeouts["default"]
        self._call_options: dict[tuple[str, bool], CallOptions] = {}
        self._budget_rates: dict[str, Rates] = {}
        self.drop_rules = DropRules(config.parameter_validation)
        self.catalogue = catalogue.install(config.catalogue)

    # -- stages --------------------------------------------------------------------------------

    def prepare(self, request: InferenceRequest, ctx: CallContext) -> RoutePlan:
        """Everything that can refuse a request before any upstream call: returns the route plan."""
        ctx.model = request.model
        model = next(iter(self.router.models().get(request.model) or ()), None)
        check_request(request, model.models[request.model] if model else None)
        Authenticator.authorize_model(ctx.key, request.model)
        plan = self.router.plan(request.model, request)
        model_cfg = self.router.models()[request.model][0].models[request.model]
        if model_cfg.kind == "embedding":
            raise InvalidRequest(
                f"model: {request.model!r} is an embedding model; send it to POST /v1/embeddings "
                "(or Gemini's :embedContent)",
                param="model",
                code="model_not_chat",
            )
        self.drop_rules.apply(request)
        max_out = request.max_tokens or min(model_cfg.max_output_tokens or 1024, 1024)
        ctx.reservation = self.admission.admit_key(ctx.key, estimate_prompt_tokens(request) + max_out)
        return plan

    async def _reserve_budget(self, ctx: CallContext, model: str, worst: Callable[[Rates], int]) -> None:
        """Reserve the worst-case cost (`worst` of the model's dearest rates) on the key's and its
        customer's budgets (docs/budgets.md); settled with the real cost when the request is recorded."""
        accounts = self.budgets.accounts_for(ctx.key.key_id, ctx.key.customer_id)
        if not accounts:
            return
        rates = self._budget_rates.get(model)
        if rates is None:
            rates = self._budget_rates[model] = self._rates(model)
        try:
            ctx.budget = await self.budgets.reserve(accounts, worst(rates))
        except BudgetExceeded as e:
            metrics = telemetry.metrics
            if metrics is not None:
                metrics.budget_exceeded.labels(e.scope).inc()
            if ctx.reservation is not None:  # refused before any upstream call: not the caller's use
                self.admission.release(ctx.reservation)
                ctx.reservation = None
            raise

    def _rates(self, model: str) -> Rates:
        """Over every provider serving the model: the request may fail over to any of them."""
        providers = self.router.models().get(model) or []
        return Rates(
            (p.prices[model] for p in providers if model in p.prices),
            max((p.models[model].max_output_tokens for p in providers if model in p.models), default=0),
        )

    def _observe_headers(self, target: Target, headers: Mapping[str, str]) -> None:
        lim = self.admission.find(target.endpoint.id, target.model.name)
        if lim is not None:  # None: a reload removed the endpoint while this call was in flight
            self.admission.observe(lim, headers, self.admission.clock())

    def _fit(
        self, request: InferenceRequest, target: Target, ctx: CallContext, fo: Failover
    ) -> InferenceRequest:
        """The request as this attempt's model accepts it (the catalogue's rules for its family,
        docs/catalogue.md); a refusal before anything went upstream gives the key's tokens back."""
        try:
            return self.catalogue.fit(request, target.model.upstream_id, ctx.request_id)
        except InvalidRequest:
            if fo.attempts == 0 and ctx.reservation is not None:
                self.admission.release(ctx.reservation)
                ctx.reservation = None
            raise

    def _admit_endpoint(self, plan: RoutePlan, cand: Candidate, ctx: CallContext, fo: Failover) -> bool:
        """Per-endpoint admission for one attempt; on success the attempt is the context's target."""
        tokens = ctx.reservation.tokens if ctx.reservation is not None else 1
        if cand.limits.tpm and tokens > cand.limits.tpm:
            fo.too_big += 1  # no wait would help; not a reason to answer 429
            return False
        now = self.admission.clock()
        wait = self.admission.admit_endpoint(cand.limits, tokens, now)
        if wait:
            fo.skip(wait)
            return False
        ctx.target = cand.target
        ctx.endpoint_reservation = (cand.limits, tokens, now)
        ctx.route = self.router.decision_for(plan, cand)
        fo.attempts += 1
        return True

    def _attempt_failed(self, ctx: CallContext, e: ProviderError, fo: Failover) -> None:
        """An attempt failed before anything reached the client: give back its tokens."""
        lim = None
        if ctx.endpoint_reservation is not None:
            lim, tokens, at = ctx.endpoint_reservation
            # The request stays counted (the provider saw it); the reserved tokens were not used.
            self.admission.reconcile_endpoint(lim, tokens, 0, at)
            ctx.endpoint_reservation = None
        if e.retryable and ctx.target is not None:
            pause_ms = self._cool_down(ctx.target, e)
            if e.upstream_status in (429, 529):
                # The Retry-After the client gets must be true: the endpoint is free again once
                # both its cool-down and what the provider's headers said are over.
                view_ms = self.admission.upstream_wait(lim, self.admission.clock()) if lim is not None else 0
                fo.skip(max(pause_ms, view_ms), overloaded=e.kind == "overloaded")
            fo.errors.append(e)

    def _succeeded(self, plan: RoutePlan, ctx: CallContext) -> None:
        target = ctx.target
        assert target is not None
        target.endpoint.failures = 0
        for cand in plan.candidates:
            if cand.target is target:
                self.router.remember(plan, cand, ctx.request_id)
                break
        if log.isEnabledFor(logging.DEBUG) and ctx.route is not None:
            r = ctx.route
            log.debug(
                "route %s: %s/%s reason=%s cache_value=%.6f cost_penalty=%.6f affinity=%s",
                ctx.request_id,
                target.provider.name,
                target.endpoint.id,
                r.reason,
                r.cache_value,
                r.cost_penalty,
                r.affinity_endpoint or "-",
            )

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
            return CallOptions(
                stall_timeout=t.stall_timeout, overall_timeout=t.overall_timeout, clock=self.clock
            )
        total = max(
            self.config.provider_timeouts.default, t.stall_timeout if t is not self._default_timeouts else 0
        )
        return CallOptions(stall_timeout=total, overall_timeout=total)

    def _cool_down(self, target: Target, error: ProviderError) -> int:
        """Avoid the endpoint for a while; returns the pause in ms (0: not cooled down).

        A 429/529 is the provider's own word: cool down at once, for its retry-after. A 5xx,
        connect error or timeout may be one bad request, so only the provider's
        `cooldown_after_failures` in a row cool the endpoint down, for a pause that doubles with
        each further failure."""
        endpoint = target.endpoint
        if error.upstream_status in (429, 529):
            pause = min(error.retry_after_s or COOLDOWN_AFTER_429, 300.0)
            limit = True
        else:
            endpoint.failures += 1
            threshold = endpoint.cooldown_after_failures
            if not threshold or endpoint.failures < threshold:
                return 0
            base = COOLDOWN_AFTER_CONNECT_ERROR if error.code == "connect_error" else COOLDOWN_AFTER_5XX
            doubling = 2.0 ** min(endpoint.failures - threshold, 5)
            pause = min(max(error.retry_after_s or 0.0, base * doubling), MAX_FAILURE_COOLDOWN)
            limit = False
        until = self.admission.clock() / 1000 + pause
        if until > endpoint.cooldown_until:
            endpoint.cooldown_until = until
            endpoint.cooling_for_limit = limit
            endpoint.cooling_overloaded = limit and error.kind == "overloaded"
        return int(pause * 1000)

    def _exhausted(self, fo: Failover, ctx: CallContext) -> EnsembleError:
        if fo.too_big and not (fo.limited or fo.errors):
            tokens = ctx.reservation.tokens if ctx.reservation is not None else 0
            error: EnsembleError = InvalidRequest(
                f"max_tokens: this request needs an estimated {tokens} tokens (prompt + max_tokens), more "
                "than the tokens-per-minute limit of every endpoint serving this model; lower max_tokens "
                "or shorten the prompt",
                param="max_tokens",
                code="exceeds_token_limit",
            )
        else:
            error = self._exhausted_error(fo)
        if fo.attempts == 0 and ctx.reservation is not None:
            # Nothing went upstream: the refusal is the gateway's, not the caller's use.
            self.admission.release(ctx.reservation)
            ctx.reservation = None
        return error

    @staticmethod
    def _exhausted_error(fo: Failover) -> EnsembleError:
        """The error for the client once no candidate could answer.

        429 when any candidate was at its limit, cooling down or answered 429: the client should
        come back at the soonest time one frees up. 503 `overloaded` when the providers said they are
        overloaded (529) and none was rate-limited. Otherwise every attempt failed in another
        retryable way (5xx, connect error, timeout) and the last error is returned (its kind kept:
        a Gemini UNAVAILABLE stays an overload)."""
        if not fo.limited and not fo.errors and fo.failing_wait_ms > 0:
            return Overloaded(
                "every endpoint serving this model is cooling down after repeated upstream failures; "
                f"retry after {fo.failing_wait_ms / 1000:.1f}s",
                retry_after_s=fo.failing_wait_ms / 1000,
                code="all_endpoints_failing",
            )
        if fo.overloaded and not fo.limited:
            # The providers' own word: overloaded, not a rate limit. Each client format says so in
            # its terms (Anthropic 529 overloaded_error, OpenAI 503, Gemini UNAVAILABLE).
            wait = fo.wait_ms if fo.wait_ms > 0 else int(COOLDOWN_AFTER_429 * 1000)
            return Overloaded(
                f"every endpoint serving this model is overloaded; retry after {wait / 1000:.1f}s",
                retry_after_s=wait / 1000,
                code="upstream_overloaded",
            )
        if fo.limited or not fo.errors:
            wait = fo.wait_ms if fo.wait_ms > 0 else int(COOLDOWN_AFTER_429 * 1000)
            return RateLimited(
                "every endpoint serving this model is at its rate limit, cooling down or overloaded; "
                f"retry after {wait / 1000:.1f}s",
                retry_after_s=wait / 1000,
                code="all_endpoints_exhausted",
            )
        errors = fo.errors
        last = errors[-1]
        if isinstance(last, UpstreamTimeout):
            return last
        return ProviderError(
            f"every endpoint serving this model failed; last error: {last.message}",
            code=last.code,
            upstream_status=last.upstream_status,
            kind=last.kind,
        )

    # -- the failover loop ------------------------------------------------------------------------

    async def _failover(
        self,
        request: InferenceRequest,
        ctx: CallContext,
        streaming: bool,
        attempt: Attempt[InferenceRequest, T],
    ) -> T:
        plan = self.calls.plan(self.prepare, request, ctx)
        if self.budgets.accounts:
            await self._reserve_budget(ctx, request.model, lambda rates: worst_case_micro(request, rates))
        return await self._try(plan, request, ctx, self.call_options(request.model, streaming), attempt)

    async def _try(
        self, plan: RoutePlan, request: R, ctx: CallContext, opts: CallOptions, attempt: Attempt[R, T]
    ) -> T:
        """Try the route plan's candidates in order until one answers; the answer of the first
        attempt that succeeds is returned (docs/routing.md, steps 2 to 5).

        Each candidate is admitted (its RPM/TPM), counted in flight, then `attempt` calls it. A
        retryable ProviderError (429, 529, 5xx, connect error, timeout: nothing reached the
        client yet) gives the tokens back, may cool the endpoint down, and moves on to the next
        candidate; any other error is the answer. When none is left: 429 with the soonest
        Retry-After, 503 for an outage, or the last error (`_exhausted`).

        The endpoint stays in flight after a successful attempt: the attempt releases it (a whole
        answer at once, a stream when it ends)."""
        fo = Failover(plan)
        for cand in plan.candidates:
            # Chat requests are fitted to each candidate's model family; embeddings have no rules.
            fitted = (
                cast(R, self._fit(request, cand.target, ctx, fo))
                if isinstance(request, InferenceRequest)
                else request
            )
            if not self._admit_endpoint(plan, cand, ctx, fo):
                continue
            target = cand.target
            t0 = time.perf_counter()
            target.endpoint.in_flight += 1
            try:
                answer = await attempt(fitted, ctx, target, opts, t0)
            except ProviderError as e:
                target.endpoint.in_flight -= 1
                ctx.upstream_s += time.perf_counter() - t0
                _count_upstream_error(target, e)
                self._attempt_failed(ctx, e, fo)
                if not e.retryable:
                    raise
                log.warning("endpoint %s failed (%s); trying the next candidate", target.endpoint.id, e.code)
                continue
            except BaseException:
                target.endpoint.in_flight -= 1
                raise
            self._succeeded(plan, ctx)
            return answer
        raise self._exhausted(fo, ctx)

    # -- whole answers ---------------------------------------------------------------------------

    async def generate(self, request: InferenceRequest, ctx: CallContext) -> InferenceResponse:
        result = await self._failover(request, ctx, False, self._whole_answer)
        return self.finish(request, ctx, result)

    async def _whole_answer(
        self, request: InferenceRequest, ctx: CallContext, target: Target, opts: CallOptions, t0: float
    ) -> ProviderResult:
        result = await self.calls.complete(request, target, opts)
        _answered(ctx, target, t0)
        return result

    # -- embeddings ------------------------------------------------------------------------------

    def prepare_embedding(self, request: EmbeddingRequest, ctx: CallContext) -> RoutePlan:
        """`prepare` for an embeddings call: the same checks and admission, no prompt cache to
        route by (embedding APIs have none), and the model must be one that embeds."""
        ctx.model = request.model
        Authenticator.authorize_model(ctx.key, request.model)
        plan = self.router.plan(request.model, None)
        model_cfg = self.router.models()[request.model][0].models[request.model]
        if model_cfg.kind != "embedding":
            raise InvalidRequest(
                f"model: {request.model!r} cannot embed: it is a chat model (models that embed are "
                "marked `kind: embedding` in their provider file)",
                param="model",
                code="model_cannot_embed",
            )
        ctx.reservation = self.admission.admit_key(ctx.key, estimated_tokens(request))
        return plan

    async def embed(self, request: EmbeddingRequest, ctx: CallContext) -> EmbeddingResponse:
        plan = self.calls.plan(self.prepare_embedding, request, ctx)
        if self.budgets.accounts:
            await self._reserve_budget(
                ctx, request.model, lambda rates: embedding_worst_case_micro(request, rates)
            )
        opts = self.call_options(request.model, False)
        try:
            result = await self._try(plan, request, ctx, opts, self._embedding)
        except InvalidRequest as e:
            if e.code != "exceeds_token_limit":
                raise
            raise InvalidRequest(  # the chat wording names max_tokens, which an embeddings call has not
                f"input: these inputs need an estimated {estimated_tokens(request)} tokens, more than the "
                "tokens-per-minute limit of every endpoint serving this model; send fewer or shorter inputs",
                param="input",
                code="exceeds_token_limit",
            ) from None
        return self.finish_embedding(request, ctx, result)

    async def _embedding(
        self, request: EmbeddingRequest, ctx: CallContext, target: Target, opts: CallOptions, t0: float
    ) -> EmbeddingResult:
        result = await self.calls.embed(request, target, opts)
        _answered(ctx, target, t0)
        return result

    def finish_embedding(
        self, request: EmbeddingRequest, ctx: CallContext, result: EmbeddingResult
    ) -> EmbeddingResponse:
        target = ctx.target
        assert target is not None
        usage = result.usage
        self._settle(ctx, usage)
        cost = result.cost if result.cost is not None else target.price.cost(usage)
        elapsed = time.perf_counter() - ctx.started
        response = EmbeddingResponse(
            id=ctx.request_id,
            model=request.model,
            provider=target.provider.name,
            endpoint_id=target.endpoint.id,
            vectors=result.vectors,
            input_tokens=usage.input_tokens,
            cost=format_cost(cost),
            cost_micro_dollars=micro_dollars(cost),
            processing_time_ms=round(elapsed * 1000, 3),
            performance=_performance(ctx, elapsed),
            rate_limit=ctx.rate_limit,
        )
        # The vectors are not stored for retrieval (they are large, and the client has them).
        self.record(
            ctx, request.model, 200, usage=usage, cost_micro=response.cost_micro_dollars, succeeded=True
        )
        return response

    def _settle(self, ctx: CallContext, usage: Usage) -> None:
        """Reconcile what admission reserved with the real usage, and read the key's rate-limit state."""
        if ctx.reservation is not None:  # reconcile first so the rate-limit info is current
            self.admission.reconcile(ctx.reservation, usage.input_tokens + usage.output_tokens)
            ctx.reservation = None
        self._reconcile_endpoint(ctx, usage)
        ctx.rate_limit = self.admission.info(ctx.key)

    def finish(
        self, request: InferenceRequest, ctx: CallContext, result: ProviderResult
    ) -> InferenceResponse:
        """Price, reconcile the reservation, build the native response and record it."""
        target = ctx.target
        assert target is not None
        usage = result.usage
        self._settle(ctx, usage)
        cost = result.cost if result.cost is not None else target.price.cost(usage)
        reasoning.stamp(result.blocks, target.provider.type)
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
            performance=_performance(ctx, elapsed),
            rate_limit=ctx.rate_limit,
        )
        self.record(
            ctx, request.model, 200, usage=usage, cost_micro=response.cost_micro_dollars, response=response
        )
        return response

    def _reconcile_endpoint(self, ctx: CallContext, usage: Usage) -> None:
        if ctx.endpoint_reservation is not None:
            lim, tokens, at = ctx.endpoint_reservation
            self.admission.reconcile_endpoint(lim, tokens, usage.input_tokens + usage.output_tokens, at)
            ctx.endpoint_reservation = None

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
        succeeded: bool = False,
    ) -> None:
        """Exactly one log/usage record per authenticated inference request (idempotent per ctx).

        A success carries its `response` (stored for retrieval) or says `succeeded` (nothing to
        store). Whatever was reserved is reconciled against the usage actually recorded (0 when none)."""
        if ctx.recorded:
            return
        ctx.recorded = True
        try:
            self._record(ctx, model, http_status, usage, cost_micro, response, error, succeeded)
        finally:
            if self.on_recorded is not None:
                self.on_recorded(ctx.request_id)

    def _record(
        self,
        ctx: CallContext,
        model: str,
        http_status: int,
        usage: Usage | None,
        cost_micro: int,
        response: InferenceResponse | None,
        error: str,
        succeeded: bool,
    ) -> None:
        usage = usage or Usage()
        if ctx.reservation is not None:
            self.admission.reconcile(ctx.reservation, usage.input_tokens + usage.output_tokens)
            ctx.reservation = None
        self._reconcile_endpoint(ctx, usage)
        self._settle_budget(ctx, cost_micro)
        metrics = telemetry.metrics
        if metrics is not None:
            metrics.finished(ctx, model, usage, cost_micro, time.perf_counter() - ctx.started)
        if ctx.target is not None:
            self.router.cache_hits.add(ctx.target.endpoint.id, usage)
        if self.request_log is None:
            return
        target = ctx.target
        route = ctx.route
        self.request_log.record(
            LogRecord(
                request_id=ctx.request_id,
                key_id=ctx.key.key_id,
                model=model,
                provider=target.provider.name if target else "",
                endpoint_id=target.endpoint.id if target else "",
                status="success" if response is not None or succeeded else "error",
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
                response_body=msgspec.json.encode(response) if response is not None and ctx.store else None,
                conversation=ctx.conversation if response is not None and ctx.store else None,
                route_reason=route.reason if route is not None else "",
                cache_value_usd=route.cache_value if route is not None else 0.0,
                cost_penalty_usd=route.cost_penalty if route is not None else 0.0,
            )
        )

    def release_budget(self, ctx: CallContext) -> None:
        """Give a reservation back unspent (a request handed on without being recorded)."""
        if ctx.budget is not None:
            self.budgets.settle(ctx.budget, 0)
            ctx.budget = None

    def _settle_budget(self, ctx: CallContext, cost_micro: int) -> None:
        """The real cost replaces the reservation (the rest is free again); spend never reserved
        (a provider batch's result, or a budget set while the request ran) is charged as is."""
        if ctx.budget is not None:
            self.budgets.settle(ctx.budget, cost_micro)
            ctx.budget = None
        elif cost_micro and self.budgets.accounts:
            accounts = self.budgets.accounts_for(ctx.key.key_id, ctx.key.customer_id)
            if accounts:
                self.budgets.settle(self.budgets.unreserved(accounts), cost_micro)

    # -- streams ---------------------------------------------------------------------------------

    async def open_stream(self, request: InferenceRequest, ctx: CallContext) -> LiveStream:
        """Connect and wait for the first content delta, failing over while nothing reached the client.

        Deltas that render nothing (usage, a bare role chunk) are held back with it, so an upstream
        error event before any content still fails over to the next candidate."""
        return await self._failover(request, ctx, True, self._first_content)

    async def _first_content(
        self, request: InferenceRequest, ctx: CallContext, target: Target, opts: CallOptions, t0: float
    ) -> LiveStream:
        ingress = ctx.passthrough
        raw = ingress is not None and target.provider.passthrough(ingress, request, target)
        if ctx.event_runs:
            opts = replace(opts, event_runs=True)
        iterator = self.calls.stream(request, target, opts, raw).__aiter__()
        held: list[StreamDelta] = []
        held_bytes: list[bytes] = []
        try:
            while True:
                try:
                    batch = await iterator.__anext__()
                except StopAsyncIteration:
                    break
                held += batch
                if isinstance(batch, RawBatch):
                    held_bytes.append(batch.raw)
                if any(isinstance(delta, CONTENT_DELTAS) for delta in batch):
                    break
        except BaseException:
            await _close(iterator)
            raise
        ctx.ttft_s = time.perf_counter() - t0
        if raw:
            held = RawBatch.of(held, b"".join(held_bytes))
        return LiveStream(self, request, ctx, iterator, held, t0, raw=raw)


def _answered(ctx: CallContext, target: Target, t0: float) -> None:
    """A whole answer arrived: the endpoint is free again and the wait counts as upstream time."""
    target.endpoint.in_flight -= 1
    ctx.upstream_s += time.perf_counter() - t0
    ctx.ttft_s = ctx.upstream_s


CONTENT_DELTAS = (
    TextDelta,
    ThinkingDelta,
    RedactedThinkingDelta,
    ServerToolDelta,
    ToolCallStart,
    ToolCallArgs,
)


def _count_upstream_error(target: Target, error: ProviderError) -> None:
    metrics = telemetry.metrics
    if metrics is not None:
        metrics.upstream_error(target.provider.name, target.endpoint.id, error)


async def _close(iterator: AsyncIterator[list[StreamDelta]]) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        try:
            await aclose()
        except Exception:  # closing a failed stream must not mask the original error
            log.debug("error while closing an upstream stream", exc_info=True)


class LiveStream:
    """An answer being streamed: `next_batch()` (or `next()`, `deltas()`) for deltas, then
    `response()` for the whole.

    Reading keeps no per-call generator, so the consumer can change hands mid-answer (the request
    handler, then a background task finishing it for a gone client) without losing or repeating a
    delta."""

    def __init__(
        self,
        gateway: Gateway,
        request: InferenceRequest,
        ctx: CallContext,
        iterator: AsyncIterator[list[StreamDelta]],
        held: list[StreamDelta],
        t0: float,
        raw: bool = False,
    ) -> None:
        self.gateway = gateway
        # The same-format fast path: batches are RawBatches whose bytes go to the client unchanged.
        self.raw = raw
        self.request = request
        self.ctx = ctx
        self.assembler = Assembler()
        self._iterator = iterator
        self._held = held  # read from the upstream before the first content, not yet handed out
        self._ready: list[StreamDelta] = []  # handed out by `next_batch`, not yet by `next`
        self._t0 = t0
        self._ended = False
        self.done = False

    @property
    def target(self) -> Target:
        assert self.ctx.target is not None
        return self.ctx.target

    def _end(self) -> None:
        if not self._ended:
            self._ended = True
            self.target.endpoint.in_flight -= 1
            self.ctx.upstream_s += time.perf_counter() - self._t0

    async def next_batch(self) -> list[StreamDelta] | None:
        """The deltas that arrived together (at least one), or None at the end of the answer.
        Errors end the stream too."""
        if self._ready:  # the rest of a batch `next()` was handing out one by one
            batch, self._ready = self._ready, []
            return batch
        batch = self._held
        if batch or isinstance(batch, RawBatch):  # held raw bytes go out even with no delta
            self._held = []
        else:
            try:
                batch = await self._iterator.__anext__()
            except StopAsyncIteration:
                self.done = True
                self._end()
                return None
            except BaseException:
                self._end()
                raise
        feed = self.assembler.feed
        for delta in batch:
            feed(delta)
        return batch

    async def next(self) -> StreamDelta | None:
        """The next delta, or None at the end of the answer."""
        while not self._ready:  # a raw batch may hold no delta
            batch = await self.next_batch()
            if batch is None:
                return None
            self._ready = batch
        return self._ready.pop(0)

    async def deltas(self) -> AsyncIterator[StreamDelta]:
        while (delta := await self.next()) is not None:
            yield delta

    def response(self) -> InferenceResponse:
        return self.gateway.finish(self.request, self.ctx, self.assembler.result())

    def fail(self, error: EnsembleError) -> None:
        """Record a stream that broke after it started; usage streamed so far is kept."""
        self._end()
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
        """Drop the upstream connection now (cancel, error)."""
        self._end()
        await _close(self._iterator)


async def drain_in_background(stream: LiveStream) -> None:
    """`on_client_disconnect: complete`: finish the upstream call, price and store the answer."""
    try:
        while await stream.next() is not None:
            pass
        stream.response()
    except EnsembleError as e:
        await stream.aclose()
        stream.fail(e)
    except asyncio.CancelledError:
        await stream.aclose()
        stream.fail(ProviderError("the gateway shut down before the answer completed", code="shutdown"))
        raise


def _performance(ctx: CallContext, elapsed: float) -> Performance:
    """Where a call's time went: to the first token, upstream, and the gateway's own share."""
    return Performance(
        ttft_ms=round((ctx.ttft_s or 0.0) * 1000, 3),
        upstream_ms=round(ctx.upstream_s * 1000, 3),
        overhead_ms=round(max(elapsed - ctx.upstream_s, 0.0) * 1000, 3),
    )
