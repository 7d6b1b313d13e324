"""HTTP/2 to providers: the pool in the Rust extension (`_native.H2Pool`, rust/src/h2client/).

Connections, TLS, HTTP/2 framing and flow control run on the pool's own thread (tokio + the h2
crate); this side only submits requests and applies what happened to them, in batches, from one
file descriptor the event loop watches. Measured against the HTTP/1.1 client and a pure-Python h2
stack in docs/performance.md ("Upstream HTTP/2").

What the caller sees is the same `UpstreamResponse` as over HTTP/1.1, with the same errors
(`connect_error`, `stream_broken`, `bad_upstream_response`, timeouts), so failover is unchanged.
Closing a response early sends RST_STREAM and leaves the connection to the other streams.
A server that answers ALPN with HTTP/1.1 gets HTTP/1.1 from then on (logged once per host).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Mapping
from urllib.parse import urlsplit

from ensemble._native import H2Pool, H2Stream
from ensemble.errors import ProviderError, UpstreamTimeout
from ensemble.upstream.client import UpstreamClient, UpstreamResponse
from ensemble.upstream.http1 import Http1Client, refuse_line_breaks
from ensemble.upstream.response import BufferedResponse

log = logging.getLogger("ensemble.upstream")

_HEAD, _DATA, _END, _FAIL, _FALLBACK = range(5)
# Credit goes back to the provider in pieces of at least this much (one call into the pool per
# piece rather than per chunk). Far below the 256 KiB stream window, so the provider never waits
# on credit the consumer has earned but we hold back.
_RELEASE_STEP = 32 * 1024


class _FallBack(Exception):
    """The server picked HTTP/1.1 in ALPN."""


class _Response(BufferedResponse):
    __slots__ = ("_client", "_taken", "stream", "token")

    def __init__(self, client: Http2Client, token: int, read_timeout: float | None, deadline: float | None):
        super().__init__(read_timeout, deadline)
        self._client = client
        self.token = token
        self.stream: H2Stream | None = None
        self._taken = 0  # taken by the consumer, not yet credited

    def _took(self, n: int, buffered: int) -> None:
        # Credit only for what the consumer took, never sooner.
        taken = self._taken + n
        if taken >= _RELEASE_STEP and self.stream is not None:
            self.stream.release(taken)
            taken = 0
        self._taken = taken

    def _abort(self) -> None:
        if self.stream is not None:
            self.stream.cancel()  # RST_STREAM(CANCEL); the connection serves the other streams
        self._client.forget(self.token)

    def _finished(self) -> None:
        self.stream = None


class Http2Client:
    """`UpstreamClient` over HTTP/2: h2c with prior knowledge for http:// URLs, ALPN over TLS."""

    def __init__(
        self,
        *,
        connect_timeout: float,
        read_timeout: float,
        max_connections_per_host: int = 100,
        http1: UpstreamClient | None = None,
    ) -> None:
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._max_connections = max_connections_per_host
        self._http1: UpstreamClient = http1 or Http1Client(
            connect_timeout=connect_timeout, read_timeout=read_timeout
        )
        self._own_http1 = http1 is None
        self._pool: H2Pool | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._streams: dict[int, _Response] = {}
        self._ids = itertools.count(1)
        self._routes: dict[str, tuple[bool, str, int, str, str]] = {}
        self._http1_hosts: set[tuple[str, int]] = set()

    @property
    def connections(self) -> int:
        """Open HTTP/2 connections (all hosts)."""
        return self._pool.connections() if self._pool is not None else 0

    async def start(self) -> None:
        # Here, not in __init__: the pool's thread must start in the process that serves (after
        # Granian forked its workers).
        if self._pool is None:
            self._pool = H2Pool(self._connect_timeout, self._max_connections)
            self._loop = asyncio.get_running_loop()
            self._loop.add_reader(self._pool.fileno(), self._on_events)
        if self._own_http1:
            await self._http1.start()

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            if self._loop is not None:
                self._loop.remove_reader(pool.fileno())
            pool.close()
        for response in list(self._streams.values()):
            response.fail(ProviderError("the gateway is shutting down", code="connect_error", retryable=True))
        self._streams.clear()
        if self._own_http1:
            await self._http1.close()

    def forget(self, token: int) -> None:
        self._streams.pop(token, None)

    def _on_events(self) -> None:
        assert self._pool is not None
        streams = self._streams
        # Flat triples, not a tuple per event (see H2Pool.drain); zip reuses its result tuple.
        events = iter(self._pool.drain())
        for token, kind, payload in zip(events, events, events, strict=True):
            response = streams.get(token)
            if response is None:
                continue  # closed by the caller meanwhile
            if kind == _DATA:
                response.feed(payload)
            elif kind == _HEAD:
                status, headers = payload
                response.headers = headers
                response.headers_complete(status)
            elif kind == _END:
                del streams[token]
                response.complete()
            elif kind == _FAIL:
                del streams[token]
                code, message = payload
                # As over HTTP/1.1: a broken protocol is not worth another endpoint, the rest is.
                retryable = code != "bad_upstream_response"
                response.fail(ProviderError(message, code=code, retryable=retryable))
            else:
                del streams[token]
                response.fail(_FallBack())

    def _route(self, url: str) -> tuple[bool, str, int, str, str]:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ProviderError(f"unsupported provider URL scheme in {parts.scheme}://", code="bad_base_url")
        tls = parts.scheme == "https"
        port = parts.port or (443 if tls else 80)
        authority = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
        if ":" in parts.hostname:  # IPv6 literal
            authority = f"[{parts.hostname}]" + (f":{parts.port}" if parts.port is not None else "")
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return tls, parts.hostname, port, authority, target

    async def post(
        self,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        read_timeout: float | None = None,
        total_timeout: float | None = None,
        stream: bool = False,
    ) -> UpstreamResponse:
        assert self._pool is not None, "UpstreamClient.start() was not called"
        route = self._routes.get(url)
        if route is None:
            route = self._routes[url] = self._route(url)
        tls, host, port, authority, path = route
        if (host, port) in self._http1_hosts:
            return await self._http1.post(
                url, headers, body, read_timeout=read_timeout, total_timeout=total_timeout, stream=stream
            )
        fields = list(headers.items())
        for name, value in fields:
            refuse_line_breaks(name, value)
        stall = None if stream else (read_timeout if read_timeout is not None else self._read_timeout)
        deadline = time.monotonic() + total_timeout if total_timeout is not None and not stream else None
        token = next(self._ids)
        response = _Response(self, token, stall, deadline)
        self._streams[token] = response
        response.stream = self._pool.submit(token, tls, host, port, authority, path, fields, body)
        try:
            await response.wait_headers()
        except _FallBack:
            if (host, port) not in self._http1_hosts:
                self._http1_hosts.add((host, port))
                log.warning("%s:%d does not offer HTTP/2 (ALPN chose HTTP/1.1): using HTTP/1.1", host, port)
            return await self._http1.post(
                url, headers, body, read_timeout=read_timeout, total_timeout=total_timeout, stream=stream
            )
        except (asyncio.CancelledError, UpstreamTimeout):
            response.close()  # client gone or stalled before the first byte: RST the stream
            raise
        return response
