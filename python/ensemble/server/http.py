"""One HTTP exchange over RSGI: headers, a size-bounded body, and the ways to answer."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import secrets
import time
import weakref
from collections.abc import Sequence
from typing import Any, Literal

from ensemble.errors import EnsembleError, InvalidRequest, RequestTimeout, RequestTooLarge
from ensemble.logs import redact
from ensemble.server.granian_rsgi import HTTPProtocol, ProtocolClosed, ProtocolError, Scope
from ensemble.server.read_deadlines import ReadDeadlines
from ensemble.storage.keys import KeyRecord

Family = Literal["native", "openai", "anthropic", "gemini", "admin"]
Headers = list[tuple[str, str]]

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")

# An unread request body is read and dropped, up to this much and this long, before answering
# without it (a refusal), so the keep-alive connection can carry the client's next request.
# Past either bound the answer says `connection: close` instead (docs/security.md).
DRAIN_BYTES = 1024 * 1024
DRAIN_SECONDS = 2.0


class _RequestIds:
    """`req_` + 8 random hex digits per process + a 16-digit counter: unique across processes and
    instances (the prefix is drawn once from the OS), without a syscall per request (a forked
    worker draws its own at the fork, not by comparing `os.getpid()` on every call: ~0.5 µs)."""

    def __init__(self) -> None:
        self._prefix = ""
        self._next = itertools.count()
        self.reseed()

    def reseed(self) -> None:
        self._prefix = "req_" + secrets.token_hex(4)
        self._next = itertools.count(int.from_bytes(secrets.token_bytes(3), "big") << 20)

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._next):016x}"


new_request_id = _RequestIds()
os.register_at_fork(after_in_child=new_request_id.reseed)  # a worker must not share its parent's sequence


class ClientDisconnected(EnsembleError):
    """The client went away while we were answering (logged as 499, never sent)."""

    status = 499
    type = "client_disconnected"
    code = "client_disconnected"


class _FlushQueue:
    """Sinks with frames queued in this loop turn, handed to Granian by one callback at its end:
    with thousands of open streams many sinks fill in the same turn, and one callback for all of
    them costs less than one per sink."""

    __slots__ = ("_sinks",)

    def __init__(self) -> None:
        self._sinks: list[StreamSink] = []  # no reference to the loop: it keys a weak mapping

    def add(self, sink: StreamSink) -> None:
        if not self._sinks:
            asyncio.get_running_loop().call_soon(self._run)
        self._sinks.append(sink)

    def _run(self) -> None:
        sinks, self._sinks = self._sinks, []
        for sink in sinks:
            sink.flush()


_flush_queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _FlushQueue] = weakref.WeakKeyDictionary()


def _flush_queue() -> _FlushQueue:
    loop = asyncio.get_running_loop()
    queue = _flush_queues.get(loop)
    if queue is None:
        queue = _flush_queues[loop] = _FlushQueue()
    return queue


class StreamSink:
    """The body of a streamed response.

    `write` queues a frame and everything queued in one loop turn leaves in a single `send_bytes` at
    the end of that turn (one `call_soon` shared by all sinks, no task): the role frame, the first
    tokens and the finish usually go out as one write. Granian's response is started only at that
    first write, so the status line, the headers and the first frames leave together (each call into
    Granian wakes its I/O thread, which shares the worker's core). Granian's `send_bytes` queues the
    bytes for its writer and returns an already-finished awaitable (granian 2.8: it never waits for
    the socket), so it is called without awaiting. What a stalled reader can pin is therefore held
    inside Granian, bounded by one answer (docs/streaming.md, Backpressure). A failed write means the client is
    gone: the next `write` (or `close`) raises ClientDisconnected.
    """

    __slots__ = (
        "_error",
        "_flushes",
        "_headers",
        "_pending",
        "_proto",
        "_scheduled",
        "_status",
        "_transport",
        "bytes_sent",
    )

    def __init__(self, proto: HTTPProtocol, status: int, headers: Headers) -> None:
        self._proto: HTTPProtocol | None = proto
        self._status = status
        self._headers = headers
        self._transport: Any = None
        self._flushes = _flush_queue()
        self._pending: list[bytes] = []
        self._scheduled = False
        self._error: BaseException | None = None
        self.bytes_sent = 0

    @property
    def _open(self) -> bool:
        """Not failed and not released: a response to start (`_proto`) or one started (`_transport`)."""
        return self._error is None and (self._proto is not None or self._transport is not None)

    def write(self, data: bytes) -> None:
        # `_open`, spelled out: called for every frame.
        if self._error is not None or (self._proto is None and self._transport is None):
            raise ClientDisconnected("the client closed the connection") from self._error
        self._pending.append(data)
        if not self._scheduled:
            self._scheduled = True
            self._flushes.add(self)

    def _start(self) -> Any:
        proto, self._proto = self._proto, None
        assert proto is not None
        self._transport = proto.response_stream(self._status, self._headers)
        return self._transport

    def flush(self) -> None:
        self._scheduled = False
        pending = self._pending
        if not pending or not self._open:
            return
        self._pending = []
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        try:
            transport = self._transport if self._transport is not None else self._start()
            transport.send_bytes(data)
        except (ProtocolClosed, ProtocolError, ConnectionError, RuntimeError) as e:
            self._error = e
            return
        self.bytes_sent += len(data)

    async def close(self) -> None:
        """Hand over what is queued (the response ends when the handler returns)."""
        self.flush()
        if self._error is not None:
            raise ClientDisconnected("the client closed the connection") from self._error

    def release(self) -> None:
        """Let go of Granian's transport: a streamed body ends when the transport is released, and
        an exception traceback that still references the pump's frame (e.g. after a cancelled
        upstream read) must not keep the client waiting for an end that never comes."""
        self.flush()
        if self._transport is None and self._proto is not None and self._error is None:
            with contextlib.suppress(ProtocolClosed, ProtocolError, ConnectionError, RuntimeError):
                self._start()  # nothing was ever sent: still answer with the status and headers
        self._transport = None
        self._proto = None


def _valid_request_id(supplied: str) -> bool:
    return _REQUEST_ID.fullmatch(supplied) is not None and redact(supplied) == supplied


class Request:
    __slots__ = (
        "_body_done",
        "_client",
        "body_bytes",
        "call",
        "deadlines",
        "family",
        "params",
        "proto",
        "request_id",
        "responded",
        "scope",
        "started",
        "status",
    )

    def __init__(self, scope: Scope, proto: HTTPProtocol, deadlines: ReadDeadlines | None = None) -> None:
        self.scope = scope
        self.proto = proto
        self.deadlines = deadlines  # server.read_timeout for the body; None: no bound
        self.started = time.perf_counter()
        self.family: Family = "native"
        self.params: dict[str, str] = {}
        self.responded = False
        self.status = 0
        self.call: Any = None  # the gateway's CallContext once an inference handler made one (telemetry)
        self._body_done: bool | None = None  # None: unread; False: begun, not finished; True: read
        self._client: KeyRecord | None = None
        self.body_bytes = b""  # the body once read (a refusal's record names the model in it)
        supplied = scope.headers.get("x-request-id")
        self.request_id = (
            supplied if supplied is not None and _valid_request_id(supplied) else new_request_id()
        )

    def check_request_id(self) -> None:
        """A supplied X-Request-ID we would not echo is the client's mistake (the request was given
        a fresh id to answer with)."""
        supplied = self.scope.headers.get("x-request-id")
        if supplied is not None and supplied != self.request_id:
            raise InvalidRequest(
                "X-Request-ID: must be 1-128 characters of letters, digits and . _ : - (and not an API key)",
                code="invalid_request_id",
            )

    @property
    def client(self) -> KeyRecord:
        """The caller's key record, on routes whose auth is "client" (the dispatcher checked it)."""
        if self._client is None:
            raise RuntimeError(f"{self.path}: its route does not authenticate clients (auth='client')")
        return self._client

    @client.setter
    def client(self, record: KeyRecord) -> None:
        self._client = record

    @property
    def authenticated(self) -> KeyRecord | None:
        """The caller's key record if the dispatcher authenticated one, else None."""
        return self._client

    @property
    def method(self) -> str:
        return self.scope.method

    @property
    def path(self) -> str:
        return self.scope.path

    def header(self, name: str) -> str | None:
        value: str | None = self.scope.headers.get(name)
        return value

    @property
    def headers(self) -> Any:
        return self.scope.headers

    async def body(self, limit: int) -> bytes:
        """The whole request body, refusing (413) anything over `limit` bytes before reading it all,
        and (408) one that has not fully arrived within server.read_timeout."""
        deadlines = self.deadlines
        task = deadlines.begin() if deadlines is not None else None
        try:
            self.body_bytes = await self._body(limit)
            return self.body_bytes
        except asyncio.CancelledError:
            if task is not None and deadlines is not None and deadlines.end(task):
                raise RequestTimeout(
                    f"the request body did not arrive within {deadlines.timeout:g}s (server.read_timeout)"
                ) from None
            raise
        except (ProtocolClosed, ProtocolError) as e:
            # A body cut short (the client went away mid-upload) is the client's doing, not a 500.
            raise ClientDisconnected("the client closed the connection before sending the whole body") from e
        finally:
            if task is not None and deadlines is not None:
                deadlines.end(task)

    async def _body(self, limit: int) -> bytes:
        length = self.header("content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                raise InvalidRequest("Content-Length: not a number", code="invalid_content_length") from None
            if declared > limit:
                raise RequestTooLarge(f"request body is {declared} bytes; the limit is {limit}")
            self._body_done = False
            body: bytes = await self.proto()
            self._body_done = True
            return body
        chunks: list[bytes] = []
        size = 0
        self._body_done = False
        async for chunk in self.proto:
            size += len(chunk)
            if size > limit:
                raise RequestTooLarge(f"request body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
        self._body_done = True
        return b"".join(chunks)

    def _declares_body(self) -> bool:
        length = self.header("content-length")
        if length is not None:
            return length.strip() != "0"
        return self.header("transfer-encoding") is not None

    async def drain(self) -> bool:
        """Read and drop what is left of the request body, bounded by DRAIN_BYTES and DRAIN_SECONDS;
        False when it could not be (too big, too slow, cut off): the connection cannot be reused."""
        if self._body_done or not self._declares_body():
            return True
        length = self.header("content-length")
        if length is not None and (not length.strip().isdigit() or int(length) > DRAIN_BYTES):
            return False
        self._body_done = False
        size = 0
        try:
            async with asyncio.timeout(DRAIN_SECONDS):
                async for chunk in self.proto:
                    size += len(chunk)
                    if size > DRAIN_BYTES:
                        return False
        except (TimeoutError, ProtocolClosed, ProtocolError):
            return False
        self._body_done = True
        return True

    def _headers(self, content_type: str, extra: Sequence[tuple[str, str]]) -> Headers:
        return [("content-type", content_type), ("x-request-id", self.request_id), *extra]

    def send(
        self,
        status: int,
        body: bytes,
        content_type: str = "application/json",
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.responded = True
        self.status = status
        self.proto.response_bytes(status, self._headers(content_type, headers), body)

    def start_stream(
        self, content_type: str, headers: Sequence[tuple[str, str]] = (), status: int = 200
    ) -> StreamSink:
        self.responded = True
        self.status = status
        extra = [("cache-control", "no-cache"), ("x-accel-buffering", "no"), *headers]
        return StreamSink(self.proto, status, self._headers(content_type, extra))
