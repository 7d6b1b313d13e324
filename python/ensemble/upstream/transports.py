"""Both transports of one worker, and which one each provider uses.

`Upstream` holds one HTTP/1.1 client and one HTTP/2 pool per worker and hands each provider the
one its `http` setting names (`client_for`). Environment switches, for tests and benchmarks and as
escape hatches: `ENSEMBLE_UPSTREAM_HTTP=1.1|2` stands for `http: auto` (every provider that does not
name a version); `ENSEMBLE_UPSTREAM_CLIENT=aiohttp` puts aiohttp in place of the HTTP/1.1 client.
"""

from __future__ import annotations

import os
from collections.abc import Coroutine, Mapping
from typing import Any

from ensemble.upstream.client import AiohttpClient, UpstreamClient, UpstreamResponse
from ensemble.upstream.http1 import Http1Client
from ensemble.upstream.http2 import Http2Client


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
