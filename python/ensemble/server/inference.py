"""Inference routes: native generate / stream / text stream and OpenAI chat completions.

Each handler: parse its format → gateway → render (the dispatcher authenticated the caller before:
`req.client`). Every stream format goes through one pump, so disconnect handling and mid-stream
errors behave the same everywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

import orjson

from ensemble import telemetry
from ensemble.api import native, openai
from ensemble.errors import EnsembleError, ProviderError
from ensemble.gateway import CallContext, LiveStream, drain_in_background
from ensemble.providers.base import RawBatch
from ensemble.server.errors import client_status
from ensemble.server.http import ClientDisconnected, Headers, Request, StreamSink
from ensemble.server.routes import Handler, Route
from ensemble.server.runtime import Runtime
from ensemble.storage.keys import KeyRecord
from ensemble.streaming.abort import abort_connection
from ensemble.streaming.cost_splice import UsageCostSplice
from ensemble.streaming.disconnect import DisconnectWatch
from ensemble.streaming.relay import CoalescedRelay
from ensemble.types import InferenceRequest, InferenceResponse, RateLimitInfo, StreamDelta, TextDelta

log = logging.getLogger("ensemble.server")

T = TypeVar("T")


class StreamFormat(Protocol):
    content_type: str
    # The provider wire format whose stream this client could take byte for byte (openai,
    # anthropic, gemini), or None: always rendered (docs/performance.md, the same-format fast path).
    passthrough: str | None

    def start(self) -> bytes: ...
    def render(self, delta: StreamDelta) -> bytes | None: ...
    def finish(self, response: InferenceResponse) -> bytes: ...
    def error(self, error: EnsembleError, request_id: str) -> bytes: ...


class NativeEvents:
    content_type = "text/event-stream; charset=utf-8"
    passthrough: str | None = None

    def __init__(self) -> None:
        self._blocks = native.BlockEvents()
        self.render = self._blocks.render  # called per token: no extra frame in between

    def start(self) -> bytes:
        return b""

    def finish(self, response: InferenceResponse) -> bytes:
        return native.sse_done(response)

    def error(self, error: EnsembleError, request_id: str) -> bytes:
        return native.sse_error(error, request_id)


ABORT_GRACE_S = 0.05  # a broken plain-text answer: how long its text has to leave before the abort


class PlainText:
    """Only the answer's text. Plain text has no in-band error, so a mid-stream failure aborts the
    connection instead of ending the body: the client sees an incomplete answer (docs/streaming.md)."""

    content_type = "text/plain; charset=utf-8"
    passthrough: str | None = None
    abort_on_error = True

    def start(self) -> bytes:
        return b""

    def render(self, delta: StreamDelta) -> bytes | None:
        return delta.text.encode() if isinstance(delta, TextDelta) and delta.text else None

    def finish(self, response: InferenceResponse) -> bytes:
        return b""

    def error(self, error: EnsembleError, request_id: str) -> bytes:
        return b""


class OpenAIChunks:
    content_type = "text/event-stream; charset=utf-8"

    render: Callable[[StreamDelta], bytes | None]
    _writer: openai.ChunkWriter

    def __init__(self, request_id: str, model: str, include_usage: bool) -> None:
        self._request = (request_id, model, include_usage)
        # The gateway always asks an OpenAI-type provider for the usage chunk: a client that did
        # not ask for it cannot take the bytes unchanged.
        self.passthrough = "openai" if include_usage else None

    def start(self) -> bytes:
        # Built only for a rendered stream (a passed-through one never renders a chunk).
        self._writer = openai.ChunkWriter(*self._request)
        self.render = self._writer.render  # called per token: no extra frame in between
        return self._writer.start()

    def finish(self, response: InferenceResponse) -> bytes:
        return self._writer.finish(response)

    def error(self, error: EnsembleError, request_id: str) -> bytes:
        return openai.sse_error(error)


def rate_limit_headers(info: RateLimitInfo | None) -> Headers:
    if info is None:
        return []
    return [
        ("x-ratelimit-limit-requests", str(info.limit_requests)),
        ("x-ratelimit-remaining-requests", str(info.remaining_requests)),
        ("x-ratelimit-limit-tokens", str(info.limit_tokens)),
        ("x-ratelimit-remaining-tokens", str(info.remaining_tokens)),
    ]


def proxied_headers(ctx: CallContext, overhead_ms: float) -> Headers:
    headers: Headers = []
    if ctx.target is not None:
        headers += [
            ("x-ensemble-provider", ctx.target.provider.name),
            ("x-ensemble-endpoint", ctx.target.endpoint.id),
        ]
    if ctx.route is not None:
        headers.append(("x-ensemble-route-reason", ctx.route.reason))
    headers.append(("x-ensemble-overhead-ms", f"{overhead_ms:.3f}"))
    return headers + rate_limit_headers(ctx.rate_limit)


def answer_headers(ctx: CallContext, response: InferenceResponse) -> Headers:
    """Headers of a whole proxied answer: the proxied ones and what it cost (a stream's cost is in
    its last event, since headers go before the answer)."""
    return [*proxied_headers(ctx, response.performance.overhead_ms), ("x-ensemble-cost-usd", response.cost)]


def records_refusals(handler: Handler) -> Handler:
    """An inference route whose refusals before the gateway saw the request (a body its format
    cannot parse, a field out of range) are in the request log too: one record per authenticated
    request (docs/accounting.md), with the status the client got."""

    async def handle(rt: Runtime, req: Request) -> None:
        try:
            await handler(rt, req)
        except EnsembleError as e:
            key = req.authenticated
            if key is not None and req.call is None and rt.gateway is not None and not req.responded:
                ctx = req.call = CallContext(req.request_id, key, started=req.started)
                ctx.model = req.params.get("model") or _model_named(req.body_bytes)
                rt.gateway.record(ctx, ctx.model, client_status(e, req.family), error=e.message)
            raise

    handle.__name__ = handler.__name__
    handle.__doc__ = handler.__doc__
    return handle


def _model_named(body: bytes) -> str:
    try:
        data = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return ""
    model = data.get("model") if isinstance(data, dict) else None
    return model[:200] if isinstance(model, str) else ""


def apply_session_header(request: InferenceRequest, req: Request) -> None:
    if request.session_id is None:
        request.session_id = req.header("x-session-id")


def watch_disconnect(rt: Runtime, req: Request) -> DisconnectWatch | None:
    """Under `on_client_disconnect: cancel` a client that leaves stops the upstream call, even while
    it is silent (a stall, a slow first token): the handler task is cancelled. Under `complete` the
    answer is finished and stored whatever the client does, and a stream's first failed write tells
    the pump to stop writing, so nothing is watched (a watch costs a task and a Granian call)."""
    if rt.config.server.on_client_disconnect != "cancel":
        return None
    return DisconnectWatch(req.proto)


async def run_generate(
    rt: Runtime,
    req: Request,
    key: KeyRecord,
    request: InferenceRequest,
    *,
    store: bool = True,
    conversation: bytes | None = None,
) -> tuple[CallContext, InferenceResponse]:
    gateway = rt.gateway
    assert gateway is not None

    async def fall_back(ctx: CallContext, e: EnsembleError) -> bool:
        return rt.batches is not None and await rt.batches.fall_back(req, key, request, ctx, e)

    def call(ctx: CallContext) -> Awaitable[InferenceResponse]:
        ctx.store, ctx.conversation = store, conversation
        return gateway.generate(request, ctx)

    return await run_call(rt, req, key, request.model, call, fall_back)


async def run_call(
    rt: Runtime,
    req: Request,
    key: KeyRecord,
    model: str,
    call: Callable[[CallContext], Awaitable[T]],
    fall_back: Callable[[CallContext, EnsembleError], Awaitable[bool]] | None = None,
) -> tuple[CallContext, T]:
    """One whole-answer gateway call (`call`) for a request: tracked in flight, a failure recorded
    with the caller's rate-limit headers, a client that leaves under `cancel` cancelling it.
    `fall_back` may answer a failure itself (a batch took it) and say so."""
    assert rt.gateway is not None
    ctx = req.call = CallContext(req.request_id, key, started=req.started)
    rt.inflight.add(ctx.request_id, key.key_id, model)
    watch = watch_disconnect(rt, req)
    try:
        response = await call(ctx)
    except EnsembleError as e:
        if fall_back is not None and await fall_back(ctx, e):
            raise  # answered 202 (queued into a batch): a responded request's error is not rendered
        ctx.rate_limit = rt.admission.info(key)
        rt.gateway.record(ctx, model, client_status(e, req.family), error=e.message)
        e.headers += rate_limit_headers(ctx.rate_limit)
        raise
    except asyncio.CancelledError:
        if watch is None or not watch.take_cancel():
            raise
        gone = ClientDisconnected("the client disconnected; the upstream call was cancelled")
        rt.gateway.record(ctx, model, gone.status, error=gone.message)
        req.responded = True  # nothing can be sent to a gone client
        raise gone from None
    finally:
        if watch is not None:
            watch.detach()
        if not ctx.recorded:
            rt.inflight.discard(ctx.request_id)
    return ctx, response


async def pump(
    rt: Runtime, req: Request, stream: LiveStream, fmt: StreamFormat, watch: DisconnectWatch | None
) -> None:
    metrics = telemetry.metrics
    if metrics is None:
        return await _pump(rt, req, stream, fmt, watch)
    metrics.open_streams.inc()
    try:
        await _pump(rt, req, stream, fmt, watch)
    finally:
        metrics.open_streams.dec()


async def _pump(
    rt: Runtime, req: Request, stream: LiveStream, fmt: StreamFormat, watch: DisconnectWatch | None
) -> None:
    ctx = stream.ctx
    ctx.rate_limit = rt.admission.info(ctx.key)
    overhead_ms = max(time.perf_counter() - ctx.started - ctx.upstream_s - (ctx.ttft_s or 0.0), 0.0) * 1000
    sink = req.start_stream(fmt.content_type, proxied_headers(ctx, overhead_ms))
    rt.inflight.streaming(ctx.request_id, stream.target.provider.name)
    relay: CoalescedRelay | None = None
    try:
        if stream.raw:
            # The same-format fast path: the provider's bytes are the answer the client gets.
            splice = UsageCostSplice() if fmt.passthrough == "openai" else None
            while (batch := await stream.next_batch()) is not None:
                _send_raw(sink, batch, watch, splice)
            response = stream.response()
            if splice is not None:
                sink.write(splice.finish(response.cost))
            await sink.close()
            return
        head = fmt.start()
        if head:
            sink.write(head)
        window = rt.config.server.coalescence_window
        if window > 0:
            relay = CoalescedRelay(stream, window)
            await relay.run(lambda delta: _send(sink, fmt, [delta], watch))
        else:
            # No window: what arrived together is rendered and handed to the client at once.
            while (batch := await stream.next_batch()) is not None:
                _send(sink, fmt, batch, watch)
        response = stream.response()
        tail = fmt.finish(response)
        if tail:
            sink.write(tail)
        await sink.close()
    except ClientDisconnected:
        if ctx.recorded:
            return
        if rt.config.server.on_client_disconnect == "complete":
            log.info("client of %s disconnected; completing the answer for retrieval", ctx.request_id)
            if watch is not None:
                watch.detach()
            rt.spawn(
                relay.drain() if relay is not None else drain_in_background(stream),
                name=f"complete-{ctx.request_id}",
            )
            relay = None
        else:
            await _abort(stream, relay)
            stream.fail(ClientDisconnected("the client disconnected; the upstream call was cancelled"))
    except EnsembleError as e:
        log.warning("stream %s failed after it started: %s", ctx.request_id, e.message)
        await _abort(stream, relay)
        stream.fail(e)
        await _end_broken(req, sink, fmt, e, ctx.request_id)
    except Exception:
        log.exception("stream %s failed unexpectedly", ctx.request_id)
        await _abort(stream, relay)
        error = ProviderError("internal error while streaming", code="internal_error")
        stream.fail(error)
        await _end_broken(req, sink, fmt, error, ctx.request_id)
    finally:
        if relay is not None:
            relay.cancel()
        sink.release()


async def _end_broken(
    req: Request, sink: StreamSink, fmt: StreamFormat, error: EnsembleError, request_id: str
) -> None:
    """End a stream that failed after it started: the format's in-band error, or (plain text)
    what was produced so far and then an aborted connection, never a normal end."""
    with contextlib.suppress(ClientDisconnected):
        tail = fmt.error(error, request_id)
        if tail:
            sink.write(tail)
        await sink.close()
        if getattr(fmt, "abort_on_error", False) and req.scope.http_version.startswith("1"):
            # Granian writes from its own thread: give it the moment to send what was handed over
            # (the handler keeps the transport, so the body cannot end cleanly meanwhile).
            await asyncio.sleep(ABORT_GRACE_S)
            abort_connection(req.scope.client, req.scope.server)


def _send(
    sink: StreamSink, fmt: StreamFormat, deltas: list[StreamDelta], watch: DisconnectWatch | None
) -> None:
    """Render `deltas` and hand what they render to the client as one write."""
    render = fmt.render
    frames = [frame for delta in deltas if (frame := render(delta))]
    if frames:
        if watch is not None and watch.gone:
            raise ClientDisconnected("the client closed the connection")
        sink.write(frames[0] if len(frames) == 1 else b"".join(frames))


def _send_raw(
    sink: StreamSink, batch: list[StreamDelta], watch: DisconnectWatch | None, splice: UsageCostSplice | None
) -> None:
    """Hand one upstream read to the client as it came (less what `splice` holds for the cost)."""
    raw = batch.raw if isinstance(batch, RawBatch) else b""
    if splice is not None and raw:
        raw = splice.pass_on(raw)
    if raw:
        if watch is not None and watch.gone:
            raise ClientDisconnected("the client closed the connection")
        sink.write(raw)


async def _abort(stream: LiveStream, relay: CoalescedRelay | None) -> None:
    if relay is not None:
        relay.cancel()
    await stream.aclose()


async def run_stream(
    rt: Runtime,
    req: Request,
    key: KeyRecord,
    request: InferenceRequest,
    fmt: StreamFormat,
    *,
    store: bool = True,
    conversation: bytes | None = None,
) -> None:
    """A streamed answer on any HTTP route: open (with failover), then pump, watching the client.

    Failures before the first content delta are ordinary HTTP errors. Under `on_client_disconnect:
    cancel` a disconnect cancels this task wherever it waits, and the upstream call is dropped."""
    assert rt.gateway is not None
    ctx = req.call = CallContext(req.request_id, key, started=req.started)
    ctx.store, ctx.conversation = store, conversation
    server = rt.config.server
    if fmt.passthrough is not None and server.native_streams and server.coalescence_window <= 0:
        ctx.passthrough = fmt.passthrough  # the chosen provider confirms (Provider.passthrough)
    # A coalescing window merges deltas across reads itself: one event per upstream event is gone.
    ctx.event_runs = getattr(fmt, "event_runs", False) and server.coalescence_window <= 0
    rt.inflight.add(ctx.request_id, key.key_id, request.model)
    watch = watch_disconnect(rt, req)
    stream: LiveStream | None = None
    try:
        try:
            stream = await rt.gateway.open_stream(request, ctx)
        except EnsembleError as e:
            ctx.rate_limit = rt.admission.info(key)
            rt.gateway.record(ctx, request.model, client_status(e, req.family), error=e.message)
            e.headers += rate_limit_headers(ctx.rate_limit)
            raise
        await pump(rt, req, stream, fmt, watch)
    except asyncio.CancelledError:
        if watch is None or not watch.take_cancel():
            raise
        gone = ClientDisconnected("the client disconnected; the upstream call was cancelled")
        log.info("client of %s disconnected; upstream call cancelled", ctx.request_id)
        if stream is not None:
            await stream.aclose()
            stream.fail(gone)
        else:
            rt.gateway.record(ctx, request.model, gone.status, error=gone.message)
        req.responded = True  # nothing can be sent to a gone client
    finally:
        if watch is not None:
            watch.detach()
        if stream is None and not ctx.recorded:
            rt.inflight.discard(ctx.request_id)


# -- handlers ----------------------------------------------------------------------------------


@records_refusals
async def generate(rt: Runtime, req: Request) -> None:
    key = req.client
    request = native.parse_request(await req.body(rt.config.server.max_request_bytes))
    apply_session_header(request, req)
    ctx, response = await run_generate(rt, req, key, request)
    req.send(200, native.render_response(response), headers=answer_headers(ctx, response))


@records_refusals
async def stream_blocks(rt: Runtime, req: Request) -> None:
    key = req.client
    request = native.parse_request(await req.body(rt.config.server.max_request_bytes))
    apply_session_header(request, req)
    request.stream = True
    await run_stream(rt, req, key, request, NativeEvents())


@records_refusals
async def stream_text(rt: Runtime, req: Request) -> None:
    key = req.client
    request = native.parse_request(await req.body(rt.config.server.max_request_bytes))
    apply_session_header(request, req)
    request.stream = True
    await run_stream(rt, req, key, request, PlainText())


@records_refusals
async def chat_completions(rt: Runtime, req: Request) -> None:
    key = req.client
    request, include_usage = openai.parse_request(await req.body(rt.config.server.max_request_bytes))
    apply_session_header(request, req)
    if request.stream:
        await run_stream(rt, req, key, request, OpenAIChunks(req.request_id, request.model, include_usage))
        return
    ctx, response = await run_generate(rt, req, key, request)
    req.send(200, openai.render_response(response), headers=answer_headers(ctx, response))


ROUTES = [
    Route("POST", "/api/v1/generate", generate),
    Route("POST", "/api/v1/stream", stream_blocks),
    Route("POST", "/api/v1/generate/stream", stream_text),
    Route("POST", "/v1/chat/completions", chat_completions, family="openai"),
]
