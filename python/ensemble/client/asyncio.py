"""The asyncio client: `AsyncEnsembleClient` (same methods as EnsembleClient, awaited)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from ensemble.client import models as m
from ensemble.client._base import Core, Messages, SseParser, request_body, request_headers
from ensemble.client.errors import (
    APIConnectionError,
    APITimeoutError,
    StreamError,
    error_from_response,
    stream_error,
)
from ensemble.client.resilience import DEFAULT_RETRY, DEFAULT_TIMEOUTS, CircuitBreaker, RetryPolicy, Timeouts


class AsyncEnsembleClient:
    """The asyncio twin of EnsembleClient; `sleep` is an async callable (default asyncio.sleep)."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeouts: Timeouts = DEFAULT_TIMEOUTS,
        retry: RetryPolicy = DEFAULT_RETRY,
        breaker: CircuitBreaker | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        headers: Mapping[str, str] | None = None,
        env: Mapping[str, str] | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self._core = Core(
            base_url,
            api_key,
            timeouts=timeouts,
            retry=retry,
            breaker=breaker,
            clock=clock,
            headers=headers,
            env=env,
        )
        self._sleep = sleep
        self._owns_http = http_client is None
        self._http = http_client or httpx.AsyncClient()

    @property
    def base_url(self) -> str:
        return self._core.base_url

    @property
    def breaker(self) -> CircuitBreaker:
        return self._core.breaker

    async def aclose(self) -> None:
        """Closes the connection pool (not an `http_client` that was passed in)."""
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncEnsembleClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # -- the API -------------------------------------------------------------------------------

    async def generate(
        self,
        model: str,
        messages: Messages,
        *,
        request_id: str | None = None,
        session_id: str | None = None,
        **params: Any,
    ) -> m.InferenceResponse:
        body = request_body(model, messages, {**params, "session_id": session_id})
        response = await self._send(
            "POST", "/api/v1/generate", self._core.timeouts.generate, body, request_headers(request_id, None)
        )
        result: m.InferenceResponse = m.decode(m.InferenceResponse, response.content)
        return result

    def stream(
        self,
        model: str,
        messages: Messages,
        *,
        request_id: str | None = None,
        session_id: str | None = None,
        **params: Any,
    ) -> AsyncBlockStream:
        """`async for block in client.stream(...)`; then `.response` is the InferenceResponse."""
        body = request_body(model, messages, {**params, "session_id": session_id, "stream": True})
        return AsyncBlockStream(
            lambda: self._send(
                "POST",
                "/api/v1/stream",
                self._core.timeouts.stream,
                body,
                request_headers(request_id, None),
                stream=True,
            )
        )

    def generate_stream(
        self,
        model: str,
        messages: Messages,
        *,
        request_id: str | None = None,
        session_id: str | None = None,
        **params: Any,
    ) -> AsyncTextStream:
        body = request_body(model, messages, {**params, "session_id": session_id, "stream": True})
        return AsyncTextStream(
            lambda: self._send(
                "POST",
                "/api/v1/generate/stream",
                self._core.timeouts.stream,
                body,
                request_headers(request_id, None),
                stream=True,
            )
        )

    async def get_status(self, request_id: str) -> m.RequestStatus:
        path = f"/api/v1/status/{quote(request_id, safe='')}"
        response = await self._send("GET", path, self._core.timeouts.generate)
        result: m.RequestStatus = m.decode(m.RequestStatus, response.content)
        return result

    async def retrieve(self, request_id: str) -> m.InferenceResponse:
        path = f"/api/v1/retrieve/{quote(request_id, safe='')}"
        response = await self._send("GET", path, self._core.timeouts.generate)
        result: m.InferenceResponse = m.decode(m.InferenceResponse, response.content)
        return result

    async def models(self) -> list[m.Model]:
        response = await self._send("GET", "/api/v1/models", self._core.timeouts.generate)
        result: m.ModelList = m.decode(m.ModelList, response.content)
        return result.models

    async def batch(self, requests: Sequence[Mapping[str, Any]]) -> m.BatchSubmission:
        response = await self._send(
            "POST", "/api/v1/batch", self._core.timeouts.generate, {"requests": [dict(r) for r in requests]}
        )
        result: m.BatchSubmission = m.decode(m.BatchSubmission, response.content)
        return result

    async def health(self) -> m.Health:
        request = self._core.build(self._http, "GET", "/health", self._core.timeouts.health)
        try:
            response = await self._http.send(request)
        except httpx.TimeoutException as e:
            raise APITimeoutError(f"health check of {self.base_url} timed out: {e}") from e
        except httpx.TransportError as e:
            raise APIConnectionError(f"health check of {self.base_url} failed: {e!r}") from e
        if response.status_code != 200:
            raise error_from_response(response.status_code, response.headers, response.content, False)
        result: m.Health = m.decode(m.Health, response.content)
        return result

    async def is_healthy(self) -> bool:
        try:
            await self.health()
        except Exception:
            return False
        return True

    # -- resilience ----------------------------------------------------------------------------

    async def _send(
        self,
        method: str,
        path: str,
        seconds: float,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        stream: bool = False,
    ) -> httpx.Response:
        core = self._core
        core.require_key()
        retry = 0
        while True:
            probe = core.breaker.acquire()
            try:
                request = core.build(self._http, method, path, seconds, body, headers)
                response = await self._http.send(request, stream=stream)
            except httpx.TransportError as e:
                error = core.transport_error(e)
                cause: BaseException = e
            except BaseException:
                core.breaker.release(probe)
                raise
            else:
                if response.status_code < 400:
                    core.breaker.success()
                    return response
                try:
                    content = await response.aread()
                except httpx.TransportError:
                    content = b""
                finally:
                    await response.aclose()
                error = core.status_error(response, content)
                cause = error
            delay = core.next_delay(error, retry)
            if delay is None:
                raise error from (cause if cause is not error else None)
            await self._sleep(delay)
            retry += 1


class _AsyncStream:
    def __init__(self, open_response: Callable[[], Awaitable[httpx.Response]]) -> None:
        self._open = open_response
        self._response: httpx.Response | None = None

    @property
    def request_id(self) -> str | None:
        return self._response.headers.get("x-request-id") if self._response is not None else None

    async def _opened(self) -> httpx.Response:
        if self._response is None:
            self._response = await self._open()
        return self._response

    async def aclose(self) -> None:
        if self._response is not None:
            await self._response.aclose()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def _broken(self, exc: httpx.TransportError) -> StreamError:
        kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "broke"
        return StreamError(f"the stream {kind} after it started: {exc!r}", request_id=self.request_id)


class AsyncBlockStream(_AsyncStream):
    response: m.InferenceResponse | None = None

    async def __aenter__(self) -> AsyncBlockStream:
        await self._opened()
        return self

    def __aiter__(self) -> AsyncIterator[m.EventBlock]:
        return self._blocks()

    async def _blocks(self) -> AsyncIterator[m.EventBlock]:
        response = await self._opened()
        parser = SseParser()
        try:
            async for line in response.aiter_lines():
                frame = parser.feed(line)
                if frame is None:
                    continue
                event, data = frame
                if event == "block":
                    yield m.decode_block(data.encode())
                elif event == "done":
                    self.response = m.decode(m.InferenceResponse, data.encode())
                    return
                elif event == "error":
                    raise stream_error(orjson.loads(data), self.request_id)
        except httpx.TransportError as e:
            raise self._broken(e) from e
        finally:
            await self.aclose()
        raise StreamError("the stream ended without a done event", request_id=self.request_id)

    async def text(self) -> str:
        return "".join([b.text async for b in self if isinstance(b, m.TextBlock)])


class AsyncTextStream(_AsyncStream):
    async def __aenter__(self) -> AsyncTextStream:
        await self._opened()
        return self

    def __aiter__(self) -> AsyncIterator[str]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[str]:
        response = await self._opened()
        try:
            async for chunk in response.aiter_text():
                if chunk:
                    yield chunk
        except httpx.TransportError as e:
            raise self._broken(e) from e
        finally:
            await self.aclose()

    async def text(self) -> str:
        return "".join([c async for c in self])
