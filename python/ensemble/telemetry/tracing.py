"""OpenTelemetry traces: one server span per request, child spans for routing and each upstream call.

Spans are batched and sent over OTLP/HTTP (protobuf) by the SDK's background thread. When tracing is
on, the app opens the server span and the gateway's call path (call_path.py) is replaced by
`TracedCalls`, a wrapper around it; nothing is patched, and a build without `otlp_endpoint` runs the
exact same code as one without this module.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

from ensemble import __version__

if TYPE_CHECKING:
    from ensemble.call_path import CallPath, Prepare, R
    from ensemble.gateway import CallContext
    from ensemble.providers.base import CallOptions, Target
    from ensemble.router import RoutePlan
    from ensemble.types import (
        EmbeddingRequest,
        EmbeddingResult,
        InferenceRequest,
        ProviderResult,
        StreamDelta,
    )

# Spans leave in batches; a short delay keeps traces timely without a send per request.
EXPORT_DELAY_MS = 1000
EXPORT_TIMEOUT_S = 2.0


def traces_url(endpoint: str) -> str:
    """`http://collector:4318` → `http://collector:4318/v1/traces`; a full URL is kept as is."""
    path = urlsplit(endpoint).path
    return endpoint if path not in ("", "/") else endpoint.rstrip("/") + "/v1/traces"


class Tracing:
    def __init__(self, endpoint: str, processor: SpanProcessor | None = None) -> None:
        resource = Resource.create(
            {"service.name": "ensemble", "service.version": __version__, "process.pid": os.getpid()}
        )
        self.provider = TracerProvider(resource=resource)
        if processor is None:
            # Bounded: a collector that is down must not hold up a worker's shutdown (SIGTERM drain).
            exporter: SpanExporter = OTLPSpanExporter(endpoint=traces_url(endpoint), timeout=EXPORT_TIMEOUT_S)
            processor = BatchSpanProcessor(
                exporter,
                schedule_delay_millis=EXPORT_DELAY_MS,
                export_timeout_millis=int(EXPORT_TIMEOUT_S * 1000),
            )
        self.provider.add_span_processor(processor)
        self.tracer: Tracer = self.provider.get_tracer("ensemble", __version__)

    def shutdown(self) -> None:
        self.provider.shutdown()  # flushes what is still batched

    def wrap(self, calls: CallPath) -> CallPath:
        """The gateway's call path with a span around routing and around each upstream attempt."""
        return TracedCalls(calls, self.tracer)

    def request_span(self, scope: Any) -> Any:
        """The server span around one HTTP exchange (a context manager; the span is current inside)."""
        span_cm = self.tracer.start_as_current_span(
            "ensemble.request", kind=SpanKind.SERVER, record_exception=False, set_status_on_exception=False
        )
        return span_cm

    @staticmethod
    def annotate(
        span: Any, method: str, route: str, status: int, request_id: str, model: str, provider: str
    ) -> None:
        span.set_attribute("http.request.method", method)
        span.set_attribute("http.route", route)
        span.set_attribute("http.response.status_code", status)
        span.set_attribute("ensemble.request_id", request_id)
        if model:
            span.set_attribute("ensemble.model", model)
        if provider:
            span.set_attribute("ensemble.provider", provider)
        span.update_name(f"{method} {route}")
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR))


class TracedCalls:
    """A CallPath around another: `ensemble.route` for planning, `ensemble.upstream` per attempt
    (failovers included; a stream's span ends with the stream)."""

    def __init__(self, inner: CallPath, tracer: Tracer) -> None:
        self.inner = inner
        self.tracer = tracer

    def plan(self, prepare: Prepare[R], request: R, ctx: CallContext) -> RoutePlan:
        with self.tracer.start_as_current_span("ensemble.route") as span:
            span.set_attribute("ensemble.request_id", ctx.request_id)
            span.set_attribute("ensemble.model", request.model)
            plan = self.inner.plan(prepare, request, ctx)
            span.set_attribute("ensemble.candidates", len(plan.candidates))
            span.set_attribute(
                "ensemble.candidate_endpoints", [c.target.endpoint.id for c in plan.candidates]
            )
            span.set_attribute("ensemble.route_reason", plan.decision.reason)
            return plan

    async def complete(self, request: InferenceRequest, target: Target, opts: CallOptions) -> ProviderResult:
        span = self._start(target, streaming=False)
        try:
            return await self.inner.complete(request, target, opts)
        except BaseException as e:
            _failed(span, e)
            raise
        finally:
            span.end()

    async def embed(self, request: EmbeddingRequest, target: Target, opts: CallOptions) -> EmbeddingResult:
        span = self._start(target, streaming=False)
        try:
            return await self.inner.embed(request, target, opts)
        except BaseException as e:
            _failed(span, e)
            raise
        finally:
            span.end()

    async def stream(
        self,
        request: InferenceRequest,
        target: Target,
        opts: CallOptions,
        raw: bool = False,
    ) -> AsyncIterator[list[StreamDelta]]:
        span = self._start(target, streaming=True)
        inner = self.inner.stream(request, target, opts, raw)
        try:
            async for batch in inner:
                yield batch
        except BaseException as e:
            _failed(span, e)
            raise
        finally:
            aclose = getattr(inner, "aclose", None)
            if aclose is not None:
                await aclose()
            span.end()

    def _start(self, target: Target, streaming: bool) -> Any:
        span = self.tracer.start_span("ensemble.upstream", kind=SpanKind.CLIENT)
        span.set_attribute("ensemble.provider", target.provider.name)
        span.set_attribute("ensemble.endpoint", target.endpoint.id)
        span.set_attribute("ensemble.upstream_model", target.model.upstream_id)
        span.set_attribute("ensemble.stream", streaming)
        return span


def _failed(span: Any, error: BaseException) -> None:
    span.record_exception(error)
    span.set_status(Status(StatusCode.ERROR, getattr(error, "code", type(error).__name__)))
    status = getattr(error, "upstream_status", None)
    if status is not None:
        span.set_attribute("http.response.status_code", status)
