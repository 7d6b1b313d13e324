"""OpenTelemetry traces: one server span per request, child spans for routing and each upstream call.

Spans are batched and sent over OTLP/HTTP (protobuf) by the SDK's background thread. Everything here
is attached by wrapping (`wrap_*`) when tracing is on, so a build without `otlp_endpoint` runs the
exact same code as one without this module.
"""

from __future__ import annotations

import functools
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
    from ensemble.gateway import CallContext, Gateway
    from ensemble.providers.base import CallOptions, Provider, Target
    from ensemble.router import RoutePlan
    from ensemble.types import InferenceRequest, ProviderResult, StreamDelta

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

    # -- wrappers --------------------------------------------------------------------------------

    def wrap_gateway(self, gateway: Gateway) -> None:
        """`prepare` (validation, admission, candidate selection) becomes the routing span."""
        prepare = gateway.prepare
        tracer = self.tracer

        @functools.wraps(prepare)
        def traced_prepare(request: InferenceRequest, ctx: CallContext) -> RoutePlan:
            with tracer.start_as_current_span("ensemble.route") as span:
                span.set_attribute("ensemble.request_id", ctx.request_id)
                span.set_attribute("ensemble.model", request.model)
                plan = prepare(request, ctx)
                span.set_attribute("ensemble.candidates", len(plan.candidates))
                span.set_attribute(
                    "ensemble.candidate_endpoints", [c.target.endpoint.id for c in plan.candidates]
                )
                span.set_attribute("ensemble.route_reason", plan.decision.reason)
                return plan

        gateway.prepare = traced_prepare  # type: ignore[method-assign]

    def wrap_provider(self, provider: Provider) -> None:
        """Each upstream attempt (failovers included) becomes an `ensemble.upstream` span."""
        complete = provider.complete
        stream = provider.stream
        tracer = self.tracer

        def start(target: Target, streaming: bool) -> Any:
            span = tracer.start_span("ensemble.upstream", kind=SpanKind.CLIENT)
            span.set_attribute("ensemble.provider", target.provider.name)
            span.set_attribute("ensemble.endpoint", target.endpoint.id)
            span.set_attribute("ensemble.upstream_model", target.model.upstream_id)
            span.set_attribute("ensemble.stream", streaming)
            return span

        def fail(span: Any, error: BaseException) -> None:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, getattr(error, "code", type(error).__name__)))
            status = getattr(error, "upstream_status", None)
            if status is not None:
                span.set_attribute("http.response.status_code", status)

        async def traced_complete(
            request: InferenceRequest, target: Target, opts: CallOptions
        ) -> ProviderResult:
            span = start(target, False)
            try:
                result = await complete(request, target, opts)
            except BaseException as e:
                fail(span, e)
                raise
            finally:
                span.end()
            return result

        async def traced_stream(
            request: InferenceRequest, target: Target, opts: CallOptions, raw: bool = False
        ) -> AsyncIterator[list[StreamDelta]]:
            span = start(target, True)
            inner = stream(request, target, opts, raw)
            try:
                async for batch in inner:
                    yield batch
            except BaseException as e:
                fail(span, e)
                raise
            finally:
                aclose = getattr(inner, "aclose", None)
                if aclose is not None:
                    await aclose()
                span.end()

        provider.complete = traced_complete  # type: ignore[method-assign]
        provider.stream = traced_stream  # type: ignore[method-assign]

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
