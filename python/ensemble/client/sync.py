"""The blocking client: `EnsembleClient`."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any

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


class EnsembleClient:
    """A client of the Ensemble native API.

    `base_url` defaults to `$ENSEMBLE_URL` (else http://localhost:5180), `api_key` to
    `$ENSEMBLE_API_KEY`. Calls retry retryable errors per `retry`, go through the circuit `breaker`
    and have per-call `timeouts`; `clock` and `sleep` are injectable for tests.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeouts: Timeouts = DEFAULT_TIMEOUTS,
        retry: RetryPolicy = DEFAULT_RETRY,
        breaker: CircuitBreaker | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        headers: Mapping[str, str] | None = None,
        env: Mapping[str, str] | None = None,
        http_client: httpx.Client | None = None,
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
        self._http = http_client or httpx.Client()

    @property
    def base_url(self) -> str:
        return self._core.base_url

    @property
    def breaker(self) -> CircuitBreaker:
        return self._core.breaker

    def close(self) -> None:
        """Closes the connection pool (not an `http_client` that was passed in)."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> EnsembleClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- the API -------------------------------------------------------------------------------

    def generate(
        self,
        model: str,
        messages: Messages,
        *,
        request_id: str | None = None,
        session_id: str | None = None,
        **params: Any,
    ) -> m.InferenceResponse:
        """POST /api/v1/generate. `params` are native request fields (max_tokens, temperature,
        top_p, stop_sequences, tools, tool_choice, provider_config, …)."""
        body = request_body(model, messages, {**params, "session_id": session_id})
        response = self._send(
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
    ) -> BlockStream:
        """POST /api/v1/stream: iterate the returned object for EventBlock deltas; afterwards its
        `response` is the final InferenceResponse. Use it as a context manager to close early."""
        body = request_body(model, messages, {**params, "session_id": session_id, "stream": True})
        return BlockStream(
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
    ) -> TextStream:
        """POST /api/v1/generate/stream: iterate the returned object for text chunks."""
        body = request_body(model, messages, {**params, "session_id": session_id, "stream": True})
        return TextStream(
            lambda: self._send(
                "POST",
                "/api/v1/generate/stream",
                self._core.timeouts.stream,
                body,
                request_headers(request_id, None),
                stream=True,
            )
        )

    def get_status(self, request_id: str) -> m.RequestStatus:
        response = self._send("GET", f"/api/v1/status/{_segment(request_id)}", self._core.timeouts.generate)
        result: m.RequestStatus = m.decode(m.RequestStatus, response.content)
        return result

    def retrieve(self, request_id: str) -> m.InferenceResponse:
        response = self._send("GET", f"/api/v1/retrieve/{_segment(request_id)}", self._core.timeouts.generate)
        result: m.InferenceResponse = m.decode(m.InferenceResponse, response.content)
        return result

    def models(self) -> list[m.Model]:
        response = self._send("GET", "/api/v1/models", self._core.timeouts.generate)
        result: m.ModelList = m.decode(m.ModelList, response.content)
        return result.models

    def batch(self, requests: Sequence[Mapping[str, Any]]) -> m.BatchSubmission:
        """POST /api/v1/batch: each request is `{custom_id, model, messages, …}`."""
        response = self._send(
            "POST", "/api/v1/batch", self._core.timeouts.generate, {"requests": [dict(r) for r in requests]}
        )
        result: m.BatchSubmission = m.decode(m.BatchSubmission, response.content)
        return result

    def health(self) -> m.Health:
        """GET /health, once (no retries, no breaker, no key needed); raises on failure."""
        request = self._core.build(self._http, "GET", "/health", self._core.timeouts.health)
        try:
            response = self._http.send(request)
        except httpx.TimeoutException as e:
            raise APITimeoutError(f"health check of {self.base_url} timed out: {e}") from e
        except httpx.TransportError as e:
            raise APIConnectionError(f"health check of {self.base_url} failed: {e!r}") from e
        if response.status_code != 200:
            raise error_from_response(response.status_code, response.headers, response.content, False)
        result: m.Health = m.decode(m.Health, response.content)
        return result

    def is_healthy(self) -> bool:
        """True when the gateway answers GET /health with 200 within the health timeout."""
        try:
            self.health()
        except Exception:
            return False
        return True

    # -- resilience ----------------------------------------------------------------------------

    def _send(
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
                response = self._http.send(
                    core.build(self._http, method, path, seconds, body, headers), stream=stream
                )
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
                    content = response.read()
                except httpx.TransportError:
                    content = b""
                finally:
                    response.close()
                error = core.status_error(response, content)
                cause = error
            delay = core.next_delay(error, retry)
            if delay is None:
                raise error from (cause if cause is not error else None)
            self._sleep(delay)
            retry += 1


class _Stream:
    def __init__(self, open_response: Callable[[], httpx.Response]) -> None:
        self._open = open_response
        self._response: httpx.Response | None = None

    @property
    def request_id(self) -> str | None:
        """The gateway's request id (x-request-id), once the stream is open."""
        return self._response.headers.get("x-request-id") if self._response is not None else None

    def _opened(self) -> httpx.Response:
        if self._response is None:
            self._response = self._open()
        return self._response

    def close(self) -> None:
        if self._response is not None:
            self._response.close()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _broken(self, exc: httpx.TransportError) -> StreamError:
        kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "broke"
        return StreamError(f"the stream {kind} after it started: {exc!r}", request_id=self.request_id)


class BlockStream(_Stream):
    """EventBlock deltas of one `/api/v1/stream` call; `response` is set once `done` arrived."""

    response: m.InferenceResponse | None = None

    def __enter__(self) -> BlockStream:
        self._opened()
        return self

    def __iter__(self) -> Iterator[m.EventBlock]:
        response = self._opened()
        parser = SseParser()
        try:
            for line in response.iter_lines():
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
            self.close()
        raise StreamError("the stream ended without a done event", request_id=self.request_id)

    def text(self) -> str:
        """Consume the stream; the answer's text."""
        return "".join(b.text for b in self if isinstance(b, m.TextBlock))


class TextStream(_Stream):
    """Text chunks of one `/api/v1/generate/stream` call. A failure after the stream started simply
    ends the text (the plain-text route has no error frame): use `stream()` to see such errors."""

    def __enter__(self) -> TextStream:
        self._opened()
        return self

    def __iter__(self) -> Iterator[str]:
        response = self._opened()
        try:
            for chunk in response.iter_text():
                if chunk:
                    yield chunk
        except httpx.TransportError as e:
            raise self._broken(e) from e
        finally:
            self.close()

    def text(self) -> str:
        return "".join(self)


def _segment(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="")
