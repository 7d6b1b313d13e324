"""The upstream HTTP client interface and its aiohttp implementation (the per-provider choice
between the transports is transports.py).

Everything above this package sees only `UpstreamClient.post` and `UpstreamResponse`; transport
exceptions are mapped to ProviderError / UpstreamTimeout inside the implementations. Three exist:
`Http1Client` (http1.py: raw uvloop transports + httptools, the fastest HTTP/1.1 measured),
`Http2Client` (http2.py: the Rust HTTP/2 pool) and `AiohttpClient` (aiohttp: ~10x faster than
httpx's default transport on this path, DESIGN.md).

"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Protocol

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
