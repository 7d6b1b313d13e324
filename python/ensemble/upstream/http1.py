"""A pooled HTTP/1.1 client on raw asyncio transports (uvloop) with httptools (llhttp) parsing.

Why not aiohttp: on the proxy's hot path every microsecond per request counts, and a general-purpose
client does a lot a gateway never needs (cookies, redirects, multipart, tracing hooks, decompression).
This client does one thing: POST a body to a provider over a kept-alive connection and hand back the
status, the headers and the body as it arrives — with backpressure, stall and overall timeouts, and
abort-on-close so a cancelled stream never keeps the provider generating.

Connection reuse: a request that fails on a *reused* idle connection before a single response byte
arrived is retried once on a fresh connection, because the provider most likely closed the idle
connection (keep-alive expiry); a fresh connection's failure is reported (as a retryable
ProviderError, so the gateway fails over).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Mapping
from typing import cast
from urllib.parse import urlsplit

import httptools

from ensemble.errors import ProviderError, UpstreamTimeout
from ensemble.upstream.response import BufferedResponse

_HIGH_WATER = 256 * 1024  # buffered, unread response bytes before we stop reading the socket
_MAX_IDLE_PER_HOST = 512
_IDLE_TTL = 50.0  # seconds; below the usual 60 s server keep-alive so we close first
_USER_AGENT = b"ensemble-gateway"
_MAX_HEADER_BLOCKS = 1024  # distinct header sets kept encoded (one per endpoint and kind of call)


def refuse_line_breaks(name: str, value: str) -> None:
    """A header with CR or LF would end the header block early (request smuggling): never sent."""
    if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
        raise ProviderError("refusing to send a header containing a line break", code="bad_header")


class _Response(BufferedResponse):
    """The response being received on one connection; what the caller sees as UpstreamResponse."""

    __slots__ = ("_conn", "keep_alive", "received_any")

    def __init__(self, conn: _Connection, read_timeout: float | None, deadline: float | None) -> None:
        super().__init__(read_timeout, deadline)
        self._conn = conn
        self.keep_alive = False
        self.received_any = False

    def feed(self, data: bytes) -> None:
        super().feed(data)
        if self._buffered > _HIGH_WATER:
            self._conn.pause()

    def complete_keep_alive(self, keep_alive: bool) -> None:
        self.keep_alive = keep_alive
        self.complete()

    def _took(self, n: int, buffered: int) -> None:
        if buffered <= _HIGH_WATER // 2:
            self._conn.resume()

    def _abort(self) -> None:
        self._conn.abort()

    def _finished(self) -> None:
        self._conn.finished(self)


class _Connection(asyncio.Protocol):
    __slots__ = ("_parser", "_paused", "closed", "idle_since", "pool", "response", "transport", "used")

    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.response: _Response | None = None
        # One parser per connection: llhttp parses successive keep-alive responses, and building
        # one per request cost about 2 µs.
        self._parser = httptools.HttpResponseParser(self)
        self._paused = False
        self.closed = False
        self.idle_since = 0.0
        self.used = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        response = self.response
        if response is None:
            self.abort()  # bytes nobody asked for: the connection can't be trusted any more
            return
        response.received_any = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            response.fail(
                ProviderError("the provider tried to upgrade the connection", code="bad_upstream_response")
            )
            self.abort()
        except httptools.HttpParserError as e:
            response.fail(
                ProviderError(f"malformed HTTP response from the provider: {e}", code="bad_upstream_response")
            )
            self.abort()

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        response = self.response
        if response is not None:
            headers = response.headers
            if (
                response.status
                and "content-length" not in headers
                and "chunked" not in headers.get("transfer-encoding", "")
            ):
                response.complete_keep_alive(False)  # a body delimited by the connection closing ends here
            response.fail(
                ProviderError(
                    "the provider closed the connection mid-response",
                    code="stream_broken",
                    # Transient: another endpoint (before anything reached the client: the gateway
                    # holds deltas until the first content) or a client retry will likely work.
                    retryable=True,
                )
            )

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.response is not None
        self.response.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        assert self.response is not None
        self.response.headers_complete(self._parser.get_status_code())

    def on_body(self, body: bytes) -> None:
        assert self.response is not None
        self.response.feed(body)

    def on_message_complete(self) -> None:
        assert self.response is not None
        self.response.complete_keep_alive(self._parser.should_keep_alive())

    # ours
    def send(self, head: bytes, body: bytes, read_timeout: float | None, deadline: float | None) -> _Response:
        assert self.transport is not None
        self.response = _Response(self, read_timeout, deadline)
        self.used = True
        if self.closed or self.transport.is_closing():
            # Lost between the pool check and now: fail at once so the caller can retry fresh.
            self.response.fail(
                ProviderError(
                    "the connection closed before the request was sent", code="connect_error", retryable=True
                )
            )
            return self.response
        self.transport.write(head + body if len(body) < 65536 else head)
        if len(body) >= 65536:
            self.transport.write(body)
        return self.response

    def pause(self) -> None:
        if not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self.transport.resume_reading()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def finished(self, response: _Response) -> None:
        """The response was read to its end: keep the connection if both sides allow it."""
        if self.response is not response:
            return
        self.response = None
        if response.keep_alive and not self.closed and not self._paused:
            self.idle_since = time.monotonic()
            self.pool.put(self)
        else:
            self.abort()


class _Pool:
    """Idle connections to one (scheme, host, port), most recently used first."""

    def __init__(self, host: str, port: int, tls: ssl.SSLContext | None, connect_timeout: float) -> None:
        self.host = host
        self.port = port
        self.tls = tls
        self.connect_timeout = connect_timeout
        self.idle: list[_Connection] = []

    def put(self, conn: _Connection) -> None:
        if len(self.idle) < _MAX_IDLE_PER_HOST:
            self.idle.append(conn)
        else:
            conn.abort()

    def take(self) -> _Connection | None:
        now = time.monotonic()
        while self.idle:
            conn = self.idle.pop()
            if not conn.closed and now - conn.idle_since < _IDLE_TTL:
                return conn
            conn.abort()
        return None

    async def connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _Connection(self),
                    self.host,
                    self.port,
                    ssl=self.tls,
                    server_hostname=self.host if self.tls else None,
                ),
                self.connect_timeout,
            )
        except TimeoutError:
            raise ProviderError(
                f"connecting to the provider ({self.host}:{self.port}) timed out",
                code="connect_error",
                retryable=True,
            ) from None
        except OSError as e:
            raise ProviderError(
                f"cannot connect to the provider ({self.host}:{self.port}): {e.strerror or e}",
                code="connect_error",
                retryable=True,
            ) from None
        return conn

    def close(self) -> None:
        for conn in self.idle:
            conn.abort()
        self.idle.clear()


class Http1Client:
    """`UpstreamClient` on raw transports; see the module docstring."""

    def __init__(self, *, connect_timeout: float, read_timeout: float) -> None:
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._pools: dict[tuple[str, str, int], _Pool] = {}
        self._tls = ssl.create_default_context()
        self._heads: dict[tuple[str, str], tuple[_Pool, bytes]] = {}
        # The encoded header lines of each header set: a provider sends the same few to an
        # endpoint on every call (its key, content type, accept).
        self._header_blocks: dict[tuple[tuple[str, str], ...], bytes] = {}

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()

    def _route(self, url: str) -> tuple[_Pool, bytes]:
        """Pool and request-line/Host prefix for a URL, computed once per URL."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ProviderError(f"unsupported provider URL scheme in {parts.scheme}://", code="bad_base_url")
        tls = parts.scheme == "https"
        port = parts.port or (443 if tls else 80)
        key = (parts.scheme, parts.hostname, port)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = _Pool(
                parts.hostname, port, self._tls if tls else None, self._connect_timeout
            )
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
        prefix = f"POST {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: ".encode() + _USER_AGENT + b"\r\n"
        return pool, prefix

    def _header_block(self, headers: Mapping[str, str]) -> bytes:
        items = tuple(headers.items())
        block = self._header_blocks.get(items)
        if block is None:
            lines = []
            for name, value in items:
                refuse_line_breaks(name, value)
                lines.append(f"{name}: {value}\r\n".encode("latin-1"))
            block = b"".join(lines)
            if len(self._header_blocks) >= _MAX_HEADER_BLOCKS:
                self._header_blocks.clear()
            self._header_blocks[items] = block
        return block

    async def post(
        self,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        read_timeout: float | None = None,
        total_timeout: float | None = None,
        stream: bool = False,
    ) -> _Response:
        route = self._heads.get(("POST", url))
        if route is None:
            route = self._heads[("POST", url)] = self._route(url)
        pool, prefix = route
        head = prefix + self._header_block(headers) + b"Content-Length: %d\r\n\r\n" % len(body)
        stall = None if stream else (read_timeout if read_timeout is not None else self._read_timeout)
        deadline = time.monotonic() + total_timeout if total_timeout is not None and not stream else None
        conn = pool.take()
        reused = conn is not None
        for attempt in (0, 1):
            if conn is None:
                conn = await pool.connect()
            response = conn.send(head, body, stall, deadline)
            try:
                await response.wait_headers()
                return response
            except asyncio.CancelledError:
                # Cancelled while waiting for the answer (client gone, stall watchdog): drop the
                # connection so the provider stops working for nobody.
                conn.abort()
                raise
            except ProviderError as e:
                # A kept-alive connection the provider had already closed: try once more, fresh.
                if (
                    attempt == 0
                    and reused
                    and not response.received_any
                    and not isinstance(e, UpstreamTimeout)
                ):
                    conn.abort()
                    conn, reused = None, False
                    continue
                raise
        raise AssertionError("unreachable")
