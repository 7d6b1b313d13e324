"""The interface every provider adapter implements, and the HTTP plumbing they share.

A provider turns an InferenceRequest into an answer: `complete` for a whole ProviderResult,
`stream` for StreamDeltas as they arrive; providers whose API embeds also turn an EmbeddingRequest
into vectors (`embed`). HTTP providers only describe their wire format
(`WireFormat`: build the request, parse a response, frame and decode the stream, classify errors);
`HttpProvider` does the sending, stream framing (SSE in Rust unless the wire format says otherwise)
and error mapping for all of them. Each type registers itself in `registry`.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, TypeVar, cast

from ensemble._native import EventRunScanner, SseParser, StreamScanner
from ensemble.catalogue.rules import MIN_THINKING_BUDGET, REASONING_BUDGETS, reasoning_budget
from ensemble.config.schema import EndpointConfig, ModelConfig, ProviderConfig
from ensemble.errors import InvalidRequest, ProviderError
from ensemble.streaming.watchdog import Clock, StallWatchdog
from ensemble.types import (
    EmbeddingRequest,
    EmbeddingResult,
    InferenceRequest,
    ProviderResult,
    StreamDelta,
    TextDelta,
    TextRun,
)
from ensemble.usage.pricing import Price

__all__ = ["MIN_THINKING_BUDGET", "REASONING_BUDGETS", "reasoning_budget"]

if TYPE_CHECKING:  # the HTTP client itself (aiohttp, ~0.3 s to import) is the server's, not config checking's
    from ensemble.upstream import UpstreamClient, UpstreamResponse

DEFAULT_CACHE_TTL = 300.0  # seconds; what most providers keep a prompt prefix for (Anthropic: 5 minutes)


R = TypeVar("R")


@dataclass(eq=False)
class Endpoint:
    """One credentialed entry point of a provider (a key, an account or a region): a capacity pool member."""

    id: str
    provider: str
    base_url: str
    api_key: str
    rpm_limit: int
    tpm_limit: int
    weight: int
    needs_key: bool
    cooldown_until: float = 0.0  # monotonic seconds; set after upstream 429/529 or repeated failures
    cooling_for_limit: bool = False  # the current cool-down is the provider's rate limit, not a failure
    cooling_overloaded: bool = False  # ... and the provider said it is overloaded (529), not limited
    failures: int = 0  # consecutive 5xx / connect errors / timeouts; a success resets it
    cooldown_after_failures: int = 3  # the provider's setting; 0: failures never cool it down
    in_flight: int = 0

    @classmethod
    def from_config(cls, cfg: EndpointConfig, provider: ProviderConfig, needs_key: bool = True) -> Endpoint:
        return cls(
            id=cfg.id,
            provider=provider.name,
            base_url=(cfg.base_url or provider.base_url).rstrip("/"),
            api_key=cfg.api_key,
            rpm_limit=cfg.rpm_limit,
            tpm_limit=cfg.tpm_limit,
            weight=cfg.weight,
            needs_key=needs_key,
            cooldown_after_failures=provider.cooldown_after_failures,
        )

    def take_over(self, fresh: Endpoint) -> Endpoint:
        """This endpoint as `fresh` (its reloaded config) sets it up, with its live state kept:
        requests in flight, consecutive failures and cool-down. Returns self."""
        self.provider = fresh.provider
        self.base_url = fresh.base_url
        self.api_key = fresh.api_key
        self.rpm_limit = fresh.rpm_limit
        self.tpm_limit = fresh.tpm_limit
        self.weight = fresh.weight
        self.needs_key = fresh.needs_key
        self.cooldown_after_failures = fresh.cooldown_after_failures
        return self

    @property
    def has_credential(self) -> bool:
        return bool(self.api_key) or not self.needs_key

    def cooling_down(self, now: float | None = None) -> bool:
        return self.cooldown_until > (time.monotonic() if now is None else now)


@dataclass(frozen=True)
class CallOptions:
    """What bounds and shapes one upstream call."""

    stall_timeout: float  # no bytes for this long: give up
    overall_timeout: float  # the whole call, first byte to last
    # The consumer renders one event per upstream event from TextRuns (the client's stream
    # format says so), so a provider may merge a read's text fragments of one block into one.
    event_runs: bool = False
    clock: Clock = field(default=time.monotonic, compare=False)  # injected by stall-detection tests


@dataclass(eq=False)
class Target:
    """Where one attempt goes: provider, endpoint, and the model as that provider knows it."""

    provider: Provider
    endpoint: Endpoint
    model: ModelConfig
    price: Price = field(repr=False)


class Provider(ABC):
    def __init__(
        self, config: ProviderConfig, *, needs_key: bool = True, cache_ttl: float = DEFAULT_CACHE_TTL
    ) -> None:
        self.config = config
        self.name = config.name
        self.type = config.type
        self.cache_ttl = cache_ttl  # seconds; the type's default, `cache.ttls` overrides (router)
        self.endpoints = [Endpoint.from_config(e, config, needs_key) for e in config.endpoints]
        self.models: dict[str, ModelConfig] = {m.name: m for m in config.models}
        self.prices: dict[str, Price] = {m.name: Price(m.pricing) for m in config.models}
        # Set by the gateway: sees every upstream response's headers (rate-limit state, docs/routing.md).
        self.on_headers: Callable[[Target, Mapping[str, str]], None] | None = None
        # Set by the gateway (`server.native_streams`): decode streams with the native scanner.
        self.native_streams = True

    @abstractmethod
    async def complete(
        self, request: InferenceRequest, target: Target, opts: CallOptions
    ) -> ProviderResult: ...

    @abstractmethod
    def stream(
        self,
        request: InferenceRequest,
        target: Target,
        opts: CallOptions,
        raw: bool = False,
    ) -> AsyncIterator[list[StreamDelta]]:
        """The answer as batches of deltas: everything decoded from one network read comes together
        (never empty), so the consumer pays its per-item costs (a task wakeup, a client write) once
        per read rather than once per token. Nothing is held back to fill a batch. `raw` (only
        asked of providers whose `passthrough` said yes): RawBatches, one per network read.
        `opts.event_runs`: TextRuns welcome."""

    def passthrough(self, ingress: str, request: InferenceRequest, target: Target) -> bool:
        """Whether this stream's upstream bytes can go to a client speaking `ingress` (openai,
        anthropic, gemini) unchanged: the same-format fast path (docs/performance.md). Only HTTP
        providers whose wire format the native scanner reads can."""
        return False

    async def embed(self, request: EmbeddingRequest, target: Target, opts: CallOptions) -> EmbeddingResult:
        """The request's vectors; types whose API has no embeddings refuse (the config check keeps
        `kind: embedding` off them, so this is only reached through a plugin's or a test's setup)."""
        raise cannot_embed(request.model, self.type)

    def health(self) -> str:
        """healthy | degraded | unavailable, from credentials and cool-downs."""
        usable = [e for e in self.endpoints if e.has_credential]
        if not usable:
            return "unavailable"
        now = time.monotonic()
        if all(e.cooling_down(now) for e in usable):
            return "degraded"
        return "healthy"


# One event cut from a stream: (event type, data, last event id, retry ms), SSE's shape. Framings
# other than SSE fill in what they have (an NDJSON line is ("", line, "", None)).
FramedEvent = tuple[str, str, str, int | None]


class StreamFraming(Protocol):
    """How a stream's bytes become events. `feed` returns the events a chunk completes (an event may
    span chunks) and raises ValueError on a malformed stream; `close` ends it. The native SseParser
    is one, and the default."""

    def feed(self, chunk: bytes) -> Sequence[FramedEvent]: ...

    def close(self) -> None: ...


class StreamDecoder(ABC):
    """Turns one provider's stream events into StreamDeltas; keeps whatever state the format needs."""

    @abstractmethod
    def decode(self, event: str, data: str) -> list[StreamDelta]: ...

    def native_run(self, kind: int, key: int, text: str) -> StreamDelta | None:
        """The delta for a run the native scanner decoded (`StreamScanner.feed`: fragments of a block
        this decoder already opened, or the latest usage object): what `decode` would have given
        for those events together, or None when `decode` would have held them back. Wire formats
        with a `stream_scanner` implement it."""
        raise NotImplementedError(f"{type(self).__name__} has no native scanner runs")


class RawBatch(list[StreamDelta]):
    """A batch of deltas with the upstream bytes they were decoded from (the same-format fast path
    forwards `raw` to the client instead of rendering the deltas). May hold no delta (a ping)."""

    __slots__ = ("raw",)

    raw: bytes

    @classmethod
    def of(cls, deltas: list[StreamDelta], raw: bytes) -> RawBatch:
        # No Python __init__: made once per network read, and list's own constructor costs a
        # third of one that calls up to it.
        batch = cls(deltas)
        batch.raw = raw
        return batch


# StreamScanner run kinds (rust/src/scan.rs RunKind) and the marker of an event for the decoder.
RUN_TEXT, RUN_THINKING, RUN_ARGS, RUN_USAGE, RUN_EVENT = 0, 1, 2, 3, -1
# EventRunScanner's text of several events, `(text, ends)` (rust/src/event_runs.rs): a TextRun.
RUN_TEXT_EVENTS = 4


class WireFormat(ABC):
    """A provider's HTTP wire format."""

    @abstractmethod
    def build(
        self, request: InferenceRequest, target: Target, stream: bool
    ) -> tuple[str, dict[str, str], bytes]:
        """(url, headers, body) of the upstream call."""

    @abstractmethod
    def parse(self, body: bytes) -> ProviderResult: ...

    def for_target(self, target: Target) -> WireFormat:
        """The wire format for one call: a provider type may speak another API for some models
        (OpenAI's Responses API for `api: responses`)."""
        return self

    @abstractmethod
    def decoder(self) -> StreamDecoder: ...

    def framing(self) -> StreamFraming:
        """A fresh framer for one streamed answer: server-sent events, unless the API frames otherwise."""
        return SseParser()

    # The event format of this wire's streams that the native scanner reads ("openai", "anthropic",
    # "gemini"), which is also the ingress format whose clients could take the bytes unchanged;
    # None: no fast path.
    stream_scanner: str | None = None

    def rewrites_stream(self, request: InferenceRequest, target: Target) -> bool:
        """Whether a client in this wire's own format must still get the stream rewritten (the one
        check of the same-format fast path; adapters add their rules here): the client asked for
        a model name the provider knows by another id (an alias), which the chunks would show."""
        return request.model != target.model.upstream_id

    @abstractmethod
    def classify(self, status: int, headers: Mapping[str, str], body: bytes) -> ProviderError:
        """The ProviderError for an upstream error status, retryable or not."""

    def build_embedding(self, request: EmbeddingRequest, target: Target) -> tuple[str, dict[str, str], bytes]:
        """(url, headers, body) of an embeddings call, for APIs that have one."""
        raise cannot_embed(request.model, target.provider.type)

    def parse_embedding(self, body: bytes, request: EmbeddingRequest) -> EmbeddingResult:
        raise cannot_embed(request.model, "")


def cannot_embed(model: str, provider_type: str) -> InvalidRequest:
    where = f"provider type {provider_type!r} has no embeddings API" if provider_type else "no embeddings API"
    return InvalidRequest(
        f"model: {model!r} cannot embed ({where})", param="model", code="model_cannot_embed"
    )


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    value = headers.get("retry-after") or headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        return None  # an HTTP-date; rare from LLM providers, treated as unknown


def retryable_status(status: int) -> bool:
    """429, 408, 409 (OpenAI lock timeouts), 5xx and 529 (Anthropic overloaded) are worth another endpoint."""
    return status in (408, 409, 429) or status >= 500


class HttpProvider(Provider):
    """A provider reached over HTTP: its wire format says what to send and how to read the answer."""

    def __init__(
        self,
        config: ProviderConfig,
        client: UpstreamClient,
        wire: WireFormat,
        *,
        needs_key: bool = True,
        cache_ttl: float = DEFAULT_CACHE_TTL,
    ) -> None:
        super().__init__(config, needs_key=needs_key, cache_ttl=cache_ttl)
        self.client = client
        self.wire = wire

    async def complete(self, request: InferenceRequest, target: Target, opts: CallOptions) -> ProviderResult:
        wire = self.wire.for_target(target)
        url, headers, body = wire.build(request, target, stream=False)
        return await self._call(wire, url, headers, body, target, opts, wire.parse)

    async def embed(self, request: EmbeddingRequest, target: Target, opts: CallOptions) -> EmbeddingResult:
        wire = self.wire  # embeddings have one API per type (`for_target` picks among chat APIs)
        url, headers, body = wire.build_embedding(request, target)
        return await self._call(
            wire, url, headers, body, target, opts, lambda payload: wire.parse_embedding(payload, request)
        )

    async def _call(
        self,
        wire: WireFormat,
        url: str,
        headers: dict[str, str],
        body: bytes,
        target: Target,
        opts: CallOptions,
        parse: Callable[[bytes], R],
    ) -> R:
        """One whole-answer upstream call: errors classified by `wire`, the answer parsed by `parse`."""
        resp = await self.client.post(
            url, headers, body, read_timeout=opts.stall_timeout, total_timeout=opts.overall_timeout
        )
        if self.on_headers is not None:
            self.on_headers(target, resp.headers)
        payload = await resp.read()
        if not 200 <= resp.status < 300:  # 3xx too: redirects are never followed (credentials)
            raise wire.classify(resp.status, resp.headers, payload)
        try:
            return parse(payload)
        except ProviderError:
            raise
        except (ValueError, KeyError, TypeError, IndexError) as e:
            raise ProviderError(
                f"the provider's response could not be parsed ({type(e).__name__})",
                code="bad_upstream_response",
            ) from e

    def passthrough(self, ingress: str, request: InferenceRequest, target: Target) -> bool:
        wire = self.wire.for_target(target)
        return wire.stream_scanner == ingress and not wire.rewrites_stream(request, target)

    async def stream(
        self,
        request: InferenceRequest,
        target: Target,
        opts: CallOptions,
        raw: bool = False,
    ) -> AsyncIterator[list[StreamDelta]]:
        """`raw`: the fast path; every network read becomes a RawBatch (its deltas and the whole
        events it completed, as bytes), scanned natively (ScanningReader)."""
        wire = self.wire.for_target(target)
        url, headers, body = wire.build(request, target, stream=True)
        # The watchdog bounds the wait for headers and for every chunk (stall_timeout) and the whole
        # call (overall_timeout); the client's own read timers are off so there is one source of truth.
        watchdog = StallWatchdog(opts.stall_timeout, opts.overall_timeout, opts.clock)
        watchdog.arm()
        resp: UpstreamResponse | None = None
        finished = False
        try:
            watchdog.begin_read()
            try:
                resp = await self.client.post(url, headers, body, stream=True)
                if self.on_headers is not None:
                    self.on_headers(target, resp.headers)
                if not 200 <= resp.status < 300:  # a 3xx is an error, not an empty answer
                    raise wire.classify(resp.status, resp.headers, await resp.read())
            finally:
                watchdog.end_read()
            decoder = wire.decoder()
            # The scanner decodes for the translating path too (its runs are the same deltas, merged
            # per read); only the fast path forwards the bytes it lets through.
            native = self.native_streams and wire.stream_scanner is not None
            reader = (
                ScanningReader(wire, decoder, merge=raw, event_runs=opts.event_runs and not raw)
                if native
                else FramingReader(wire, decoder)
            )
            scanning = reader if raw and isinstance(reader, ScanningReader) else None
            read = reader.read
            chunks = resp.chunks().__aiter__()
            while True:
                watchdog.begin_read()
                try:
                    chunk = await chunks.__anext__()
                except StopAsyncIteration:
                    break
                finally:
                    watchdog.end_read()
                batch = read(chunk)
                if scanning is not None:
                    yield RawBatch.of(batch, scanning.out)
                elif batch:
                    yield batch
            tail = reader.close()
            if tail and scanning is not None:
                yield RawBatch.of([], tail)
            finished = True
        except asyncio.CancelledError:
            timeout = watchdog.take_cancel()
            if timeout is None:
                raise  # the client went away or the gateway shuts down
            raise timeout from None
        finally:
            watchdog.disarm()
            # An unfinished stream (client gone, error, cancel, stall) drops the connection instead
            # of leaving the upstream generating tokens nobody reads.
            if resp is not None:
                if finished:
                    resp.release()
                else:
                    resp.close()


def _malformed_event(e: Exception) -> ProviderError:
    return ProviderError(
        f"malformed stream event from the provider ({type(e).__name__})", code="bad_upstream_stream"
    )


def _malformed_stream(e: ValueError) -> ProviderError:
    return ProviderError(f"malformed stream from the provider: {e}", code="bad_upstream_stream")


class FramingReader:
    """The canonical path: the wire's framing cuts events, the decoder decodes every one."""

    __slots__ = ("_decode", "_parser")

    def __init__(self, wire: WireFormat, decoder: StreamDecoder) -> None:
        self._parser = wire.framing()
        self._decode = decoder.decode

    def read(self, chunk: bytes) -> list[StreamDelta]:
        """The deltas of one network read."""
        try:
            events = self._parser.feed(chunk)
        except ValueError as e:  # SseError is one
            raise _malformed_stream(e) from e
        decode = self._decode
        batch: list[StreamDelta] = []
        for event, data, _id, _retry in events:
            try:
                batch += decode(event, data)
            except ProviderError:
                raise
            except (ValueError, KeyError, TypeError, IndexError) as e:
                raise _malformed_event(e) from e
        return batch

    def close(self) -> bytes:
        self._parser.close()
        return b""


class ScanningReader:
    """The fast path: the native scanner decodes the common events of a read into runs (one delta
    each) and leaves the rest to the decoder, in stream order, so the deltas are the ones
    FramingReader gives, merged (docs/performance.md). `out` is what of the stream can go to the
    client after each read: whole events only (an incomplete one waits for its end), so a stream
    that fails leaves no half event before the error."""

    __slots__ = ("_decode", "_native_run", "_scanner", "_tail", "out")

    def __init__(
        self, wire: WireFormat, decoder: StreamDecoder, merge: bool = True, event_runs: bool = False
    ) -> None:
        assert wire.stream_scanner is not None
        # Merged runs only where the deltas are not rendered one client event each (the fast path),
        # or where they keep their events' ends (`event_runs`: TextRuns).
        self._scanner: StreamScanner | EventRunScanner = (
            EventRunScanner(wire.stream_scanner) if event_runs else StreamScanner(wire.stream_scanner, merge)
        )
        self._decode = decoder.decode
        self._native_run = decoder.native_run
        self._tail = b""
        self.out = b""

    def read(self, chunk: bytes) -> list[StreamDelta]:
        try:
            cut, items = self._scanner.feed(chunk)
        except ValueError as e:
            raise _malformed_stream(e) from e
        batch: list[StreamDelta] = []
        for kind, key, text in items:
            try:
                if kind == RUN_EVENT:
                    batch += self._decode(key, text)  # type: ignore[arg-type]
                elif kind == RUN_TEXT_EVENTS:
                    run, ends = cast("tuple[str, bytes]", text)
                    delta = self._native_run(RUN_TEXT, key, run)  # type: ignore[arg-type]
                    if isinstance(delta, TextDelta):
                        batch.append(TextRun(index=delta.index, text=run, ends=ends))
                else:
                    delta = self._native_run(kind, key, text)  # type: ignore[arg-type]
                    if delta is not None:
                        batch.append(delta)
            except ProviderError:
                raise
            except (ValueError, KeyError, TypeError, IndexError) as e:
                raise _malformed_event(e) from e
        tail = self._tail
        if cut == len(chunk) and not tail:
            self.out = chunk  # the common read: whole events
        elif cut == 0:  # no event ended in this read
            self.out = b""
            self._tail = tail + chunk
        else:
            self.out = tail + chunk[:cut]
            self._tail = chunk[cut:]
        return batch

    def close(self) -> bytes:
        """End of the stream: the bytes after its last event boundary (sent as they came)."""
        self._scanner.close()
        tail, self._tail = self._tail, b""
        return tail
