"""The upstream HTTP client interface, its aiohttp implementation, and the per-provider choice.

Everything above this package sees only `UpstreamClient.post` and `UpstreamResponse`; transport
exceptions are mapped to ProviderError / UpstreamTimeout inside the implementations. Three exist:
`Http1Client` (http1.py: raw uvloop transports + httptools, the fastest HTTP/1.1 measured),
`Http2Client` (http2.py: the Rust HTTP/2 pool) and `AiohttpClient` (aiohttp: ~10x faster than
httpx's default transport on this path, DESIGN.md).

`Upstream` holds one HTTP/1.1 client and one HTTP/2 pool per worker and hands each provider the
one its `http` setting names (`client_for`). Environment switches, for tests and benchmarks and as
escape hatches: `ENSEMBLE_UPSTREAM_HTTP=1.1|2` stands for `http: auto` (every provider that does not
name a version);
`ENSEMBLE_UPSTREAM_CLIENT=aiohttp` puts aiohttp in place of the HTTP/1.1 client.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Coroutine, Mapping
from typing import Any, Protocol

import aiohttp

from ensemble.errors import ProviderError, UpstreamTimeout


class UpstreamResponse(Protocol):
    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    async def read(self) -> bytes:
        """The whole body; the connection goes back to the pool."""

    def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives, in whatever pieces the network delivers."""

    def close(self) -> None:
        """Abort: drop the connection rather than returning it to the pool (used on cancel)."""

    def release(self) -> None:
        """Done with this response: keep the connection if it was read to the end."""


class UpstreamClient(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...

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
        """Send a request; return once the status line and headers are in.

        `read_timeout` bounds each wait for bytes (stall detection); `total_timeout` bounds the whole
        call. With `stream=True` neither applies: the caller's StallWatchdog bounds every wait
        (streaming.watchdog), so a stream has one timer instead of one per chunk. Redirects are never
        followed: a redirect must not carry credentials to another host.
        """
        ...


def create_client(
    *, connect_timeout: float, read_timeout: float, max_connections_per_host: int = 100
) -> Upstream:
    return Upstream(
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        max_connections_per_host=max_connections_per_host,
    )


class _Choice:
    """The client one `http` setting means: per request URL, as `auto` depends on the scheme."""

    __slots__ = ("_http1", "_http2", "_version")

    def __init__(self, version: str, http1: UpstreamClient, http2: UpstreamClient) -> None:
        self._version = version
        self._http1 = http1
        self._http2 = http2

    async def start(self) -> None:
        pass  # the Upstream that made this starts and closes both clients

    async def close(self) -> None:
        pass

    def post(
        self,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        read_timeout: float | None = None,
        total_timeout: float | None = None,
        stream: bool = False,
    ) -> Coroutine[Any, Any, UpstreamResponse]:
        # auto: HTTP/2 only where ALPN can negotiate it (https). Over plain http, HTTP/2 means h2c
        # with prior knowledge, which a server that only speaks HTTP/1.1 cannot answer.
        h2 = self._version == "2" or (self._version == "auto" and url.startswith("https:"))
        client = self._http2 if h2 else self._http1
        return client.post(
            url, headers, body, read_timeout=read_timeout, total_timeout=total_timeout, stream=stream
        )


class Upstream:
    """Both transports of one worker. Itself an `UpstreamClient` with the `auto` choice."""

    def __init__(self, *, connect_timeout: float, read_timeout: float, max_connections_per_host: int) -> None:
        from ensemble.upstream.http1 import Http1Client
        from ensemble.upstream.http2 import Http2Client

        self.http1: UpstreamClient
        if os.environ.get("ENSEMBLE_UPSTREAM_CLIENT") == "aiohttp":
            self.http1 = AiohttpClient(connect_timeout=connect_timeout, read_timeout=read_timeout)
        else:
            self.http1 = Http1Client(connect_timeout=connect_timeout, read_timeout=read_timeout)
        self.http2 = Http2Client(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_connections_per_host=max_connections_per_host,
            http1=self.http1,
        )
        self._override = os.environ.get("ENSEMBLE_UPSTREAM_HTTP", "")
        self._choices: dict[str, _Choice] = {}
        self._auto = self.client_for("auto")

    def client_for(self, version: str) -> UpstreamClient:
        """The client for a provider's `http` setting (`auto`, `1.1` or `2`)."""
        if version == "auto" and self._override:
            version = self._override
        choice = self._choices.get(version)
        if choice is None:
            choice = self._choices[version] = _Choice(version, self.http1, self.http2)
        return choice

    async def start(self) -> None:
        await self.http1.start()
        await self.http2.start()

    async def close(self) -> None:
        await self.http2.close()
        await self.http1.close()

    def post(
        self,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        read_timeout: float | None = None,
        total_timeout: float | None = None,
        stream: bool = False,
    ) -> Coroutine[Any, Any, UpstreamResponse]:
        return self._auto.post(
            url, headers, body, read_timeout=read_timeout, total_timeout=total_timeout, stream=stream
        )


class AiohttpResponse:
    __slots__ = ("_resp", "headers", "status")

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp
        self.status = resp.status
        self.headers: Mapping[str, str] = resp.headers

    async def read(self) -> bytes:
        try:
            return await self._resp.read()
        except TimeoutError as e:
            raise UpstreamTimeout("the provider stopped sending the response body", retryable=True) from e
        except aiohttp.ClientError as e:
            raise ProviderError(
                f"reading the provider's response failed: {type(e).__name__}", retryable=True
            ) from e
        finally:
            self._resp.release()

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives, in whatever pieces the network delivers."""
        try:
            async for chunk in self._resp.content.iter_any():
                yield chunk
        except TimeoutError as e:
            raise UpstreamTimeout(
                "the provider's stream stalled", retryable=True, code="stream_stalled"
            ) from e
        except aiohttp.ClientPayloadError as e:
            raise ProviderError("the provider's stream broke off", code="stream_broken") from e
        except aiohttp.ClientError as e:
            raise ProviderError(
                f"the provider's stream failed: {type(e).__name__}", code="stream_broken"
            ) from e

    def close(self) -> None:
        """Abort: drop the connection rather than returning it to the pool (used on cancel)."""
        self._resp.close()

    def release(self) -> None:
        self._resp.release()


class AiohttpClient:
    def __init__(self, *, connect_timeout: float, read_timeout: float, limit_per_host: int = 0) -> None:
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._limit_per_host = limit_per_host
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=0, limit_per_host=self._limit_per_host, keepalive_timeout=60, ttl_dns_cache=300
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=True,
            skip_auto_headers=("User-Agent",),
            timeout=aiohttp.ClientTimeout(total=None, connect=self._connect_timeout),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def post(
        self,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        read_timeout: float | None = None,
        total_timeout: float | None = None,
        stream: bool = False,
    ) -> AiohttpResponse:
        assert self._session is not None, "UpstreamClient.start() was not called"
        timeout = aiohttp.ClientTimeout(
            total=None if stream else total_timeout,
            connect=self._connect_timeout,
            sock_read=None if stream else (read_timeout if read_timeout is not None else self._read_timeout),
        )
        try:
            resp = await self._session.post(
                url, data=body, headers=headers, timeout=timeout, allow_redirects=False
            )
        except TimeoutError as e:
            raise UpstreamTimeout("the provider did not answer in time", retryable=True) from e
        except aiohttp.ClientConnectorError as e:
            raise ProviderError(
                f"cannot connect to the provider ({e.host}:{e.port})", code="connect_error", retryable=True
            ) from e
        except aiohttp.ClientError as e:
            raise ProviderError(
                f"the provider connection failed: {type(e).__name__}", code="connect_error", retryable=True
            ) from e
        return AiohttpResponse(resp)
