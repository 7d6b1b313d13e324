"""The Prometheus metrics Ensemble exports, and the few calls that feed them.

Label values are bounded: routes are route templates (`/api/v1/status/{request_id}`), models only
names the config serves (anything else is `""`), endpoints only ids from the config, statuses HTTP
codes, error classes a fixed set.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)

from ensemble.errors import ProviderError

if TYPE_CHECKING:
    from ensemble.gateway import CallContext
    from ensemble.types import Usage

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
# What Ensemble itself adds is sub-millisecond when things are well: finer buckets down there.
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)

TOKEN_KINDS = ("input", "output", "cached", "cache_creation", "reasoning")


def multiprocess_mode() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


def error_class(error: ProviderError) -> str:
    """A small fixed vocabulary for upstream failures (the label must not explode)."""
    status = error.upstream_status
    if status == 429:
        return "rate_limited"
    if status == 529:
        return "overloaded"
    if status is not None and status >= 500:
        return "server_error"
    if status is not None and status >= 400:
        return "client_error"
    if error.code == "connect_error":
        return "connect_error"
    if error.status == 504 or error.code == "stream_stalled":
        return "timeout"
    if error.code == "stream_broken":
        return "stream_broken"
    return "protocol_error"


class Metrics:
    def __init__(self) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # `_created` series double the output and nobody graphs them
        self.multiprocess = multiprocess_mode()
        # Single process: a private registry (several Apps in one process, as in benchmarks, must not
        # collide in the global one). Multiprocess: samples go to files; scrapes aggregate them.
        self.registry = None if self.multiprocess else CollectorRegistry(auto_describe=True)
        r = self.registry
        labels = ("route", "model", "provider", "status")
        self.requests = Counter(
            "ensemble_requests",
            "HTTP requests answered, by route template, model, provider and status",
            labels,
            registry=r,
        )
        self.latency = Histogram(
            "ensemble_request_duration_seconds",
            "Time from receiving a request to the end of its response (whole stream for streams)",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.overhead = Histogram(
            "ensemble_proxy_overhead_seconds",
            "Time Ensemble spent on an inference request outside upstream calls",
            ("provider",),
            buckets=OVERHEAD_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "ensemble_tokens", "Tokens used by inference requests", ("model", "provider", "kind"), registry=r
        )
        self.cost = Counter(
            "ensemble_cost_micro_dollars",
            "Cost of inference requests in millionths of a US dollar",
            ("model", "provider"),
            registry=r,
        )
        self.rate_limited = Counter(
            "ensemble_rate_limit_rejections",
            "Requests refused with 429, by reason code (key_rpm, key_tpm, all_endpoints_exhausted, …)",
            ("code",),
            registry=r,
        )
        # Their ratio is the prompt-cache hit rate the providers report, per endpoint: high when
        # cache affinity keeps requests where their prefix is cached.
        self.endpoint_prompt_tokens = Counter(
            "ensemble_endpoint_prompt_tokens",
            "Prompt tokens of inference requests (cached ones included), by provider and endpoint",
            ("provider", "endpoint"),
            registry=r,
        )
        self.endpoint_cached_tokens = Counter(
            "ensemble_endpoint_cached_prompt_tokens",
            "Prompt tokens the provider reported read from its prompt cache, by provider and endpoint",
            ("provider", "endpoint"),
            registry=r,
        )
        self.upstream_errors = Counter(
            "ensemble_upstream_errors",
            "Failed upstream calls (each attempt, failovers included), by provider, endpoint and class",
            ("provider", "endpoint", "class"),
            registry=r,
        )
        self.open_streams = Gauge(
            "ensemble_open_streams",
            "Streaming responses in progress",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.log_dropped = Counter(
            "ensemble_request_log_dropped",
            "Request-log records dropped because the ring buffer was full",
            registry=r,
        )
        self.redis_sync_lag = Gauge(
            "ensemble_redis_sync_lag_seconds",
            "Seconds from a change in Redis to its application here: a key change's publish to "
            "apply, or a rate-limit settle's round trip (worst worker)",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.batch_items = Counter(
            "ensemble_batch_items", "Batch items finished, by result type", ("type",), registry=r
        )
        self.fallback_queued = Counter(
            "ensemble_rate_limit_fallback_queued",
            "Requests queued into a batch instead of answered 429 (batch.rate_limit_fallback)",
            registry=r,
        )
        self._dropped_seen = 0
        self._http: dict[tuple[str, str, str, int], tuple[Any, Any]] = {}
        self._usage: dict[tuple[str, str], tuple[Any, ...]] = {}
        self._endpoint_usage: dict[str, tuple[Any, Any]] = {}
        self.known_models: frozenset[str] = frozenset()

    # -- feeding ---------------------------------------------------------------------------------

    def http(self, route: str, model: str, provider: str, status: int, seconds: float) -> None:
        if model and model not in self.known_models:
            model = ""
        key = (route, model, provider, status)
        children = self._http.get(key)
        if children is None:  # `labels()` locks and validates: resolve each label set once
            s = str(status)
            children = self._http[key] = (
                self.requests.labels(route, model, provider, s),
                self.latency.labels(route, model, provider, s),
            )
        children[0].inc()
        children[1].observe(seconds)

    def finished(self, ctx: CallContext, model: str, usage: Usage, cost_micro: int, elapsed_s: float) -> None:
        """One inference request is over (from Gateway.record): tokens, cost, overhead."""
        target = ctx.target
        if target is None:
            return  # refused before routing: nothing was used
        provider = target.provider.name
        if model not in self.known_models:
            model = ""
        key = (model, provider)
        children = self._usage.get(key)
        if children is None:
            children = self._usage[key] = (
                *(self.tokens.labels(model, provider, kind) for kind in TOKEN_KINDS),
                self.cost.labels(model, provider),
                self.overhead.labels(provider),
            )
        for child, value in zip(
            children,
            (
                usage.input_tokens,
                usage.output_tokens,
                usage.cached_tokens,
                usage.cache_creation_tokens,
                usage.reasoning_tokens,
                cost_micro,
            ),
            strict=False,
        ):
            if value:
                child.inc(value)
        children[-1].observe(max(elapsed_s - ctx.upstream_s, 0.0))
        if usage.input_tokens:
            endpoint = target.endpoint.id  # from the config: a bounded label set
            prompt_cache = self._endpoint_usage.get(endpoint)
            if prompt_cache is None:
                prompt_cache = self._endpoint_usage[endpoint] = (
                    self.endpoint_prompt_tokens.labels(provider, endpoint),
                    self.endpoint_cached_tokens.labels(provider, endpoint),
                )
            prompt_cache[0].inc(usage.input_tokens)
            # Incremented by 0 too, so every endpoint that served a request shows a cached series.
            prompt_cache[1].inc(usage.cached_tokens)

    def upstream_error(self, provider: str, endpoint: str, error: ProviderError) -> None:
        self.upstream_errors.labels(provider, endpoint, error_class(error)).inc()

    def sync_dropped(self, dropped_total: int) -> None:
        """The request log counts its drops; mirror the increase since the last look."""
        if dropped_total > self._dropped_seen:
            self.log_dropped.inc(dropped_total - self._dropped_seen)
            self._dropped_seen = dropped_total

    # -- exposition ------------------------------------------------------------------------------

    def render(self) -> bytes:
        if self.registry is not None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)

    def close(self) -> None:
        if self.multiprocess:
            # Drops this worker's live gauges (open streams, lag); its counters stay in the sums.
            multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
