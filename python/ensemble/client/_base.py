"""What the sync and async clients share: settings from the environment, request bodies, the
classification of each attempt's outcome and the SSE frame parser. Only I/O differs between them."""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from ensemble import __version__
from ensemble.client.errors import (
    APIConnectionError,
    APITimeoutError,
    ConfigurationError,
    EnsembleClientError,
    error_from_response,
)
from ensemble.client.resilience import CircuitBreaker, RetryPolicy, Timeouts

DEFAULT_URL = "http://localhost:5180"
USER_AGENT = f"ensemble-python/{__version__}"

Messages = str | Sequence[Mapping[str, Any]]


class MissingAPIKeyWarning(UserWarning):
    """Emitted when a client is created for an explicit URL without an API key."""


@dataclass(frozen=True, slots=True)
class Settings:
    base_url: str
    api_key: str
    url_was_set: bool

    @property
    def missing_key_message(self) -> str:
        return (
            f"Ensemble URL is set ({self.base_url}) but no API key was given: set ENSEMBLE_API_KEY "
            "(or pass api_key=...) to a client key from `ensemble keys create`"
        )


def resolve_settings(base_url: str | None, api_key: str | None, env: Mapping[str, str] | None) -> Settings:
    env = os.environ if env is None else env
    env_url = env.get("ENSEMBLE_URL", "").strip()
    url = (base_url or env_url or DEFAULT_URL).rstrip("/")
    key = (api_key if api_key is not None else env.get("ENSEMBLE_API_KEY", "")).strip()
    settings = Settings(url, key, url_was_set=bool(base_url or env_url))
    if settings.url_was_set and not key:
        # A startup warning, so a misconfigured deployment shows up in logs before the first call.
        warnings.warn(settings.missing_key_message, MissingAPIKeyWarning, stacklevel=4)
    return settings


class Core:
    """Configuration and per-attempt logic; subclasses add the HTTP calls."""

    def __init__(
        self,
        base_url: str | None,
        api_key: str | None,
        *,
        timeouts: Timeouts,
        retry: RetryPolicy,
        breaker: CircuitBreaker | None,
        clock: Callable[[], float],
        headers: Mapping[str, str] | None,
        env: Mapping[str, str] | None,
    ) -> None:
        self.settings = resolve_settings(base_url, api_key, env)
        self.timeouts = timeouts
        self.retry = retry
        self.breaker = breaker if breaker is not None else CircuitBreaker(clock=clock)
        self._headers = {"user-agent": USER_AGENT, **(headers or {})}
        if self.settings.api_key:
            self._headers["authorization"] = f"Bearer {self.settings.api_key}"

    @property
    def base_url(self) -> str:
        return self.settings.base_url

    def require_key(self) -> None:
        if self.settings.url_was_set and not self.settings.api_key:
            raise ConfigurationError(self.settings.missing_key_message)

    def build(
        self,
        http: httpx.Client | httpx.AsyncClient,
        method: str,
        path: str,
        timeout: float,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Request:
        return http.build_request(
            method,
            self.base_url + path,
            content=orjson.dumps(body) if body is not None else None,
            headers={
                **self._headers,
                **({"content-type": "application/json"} if body is not None else {}),
                **(headers or {}),
            },
            timeout=httpx.Timeout(timeout),
        )

    def transport_error(self, exc: httpx.TransportError) -> EnsembleClientError:
        """A failed attempt with no HTTP answer. Counted as a breaker failure. Retryable when the
        request cannot have been processed twice by retrying it too eagerly: connection refused,
        reset or closed, or no connection within the timeout. A read timeout is not retried: the
        gateway may still be working (and billing) on it."""
        self.breaker.failure()
        if isinstance(exc, httpx.ConnectTimeout):
            return APITimeoutError(f"could not connect to {self.base_url} in time: {exc}", retryable=True)
        if isinstance(exc, httpx.TimeoutException):
            return APITimeoutError(f"request to {self.base_url} timed out: {exc}", retryable=False)
        retryable = isinstance(exc, httpx.NetworkError | httpx.RemoteProtocolError)
        return APIConnectionError(f"connection to {self.base_url} failed: {exc!r}", retryable=retryable)

    def status_error(self, response: httpx.Response, body: bytes) -> EnsembleClientError:
        status = response.status_code
        if status >= 500:
            self.breaker.failure()
        else:
            self.breaker.success()  # 4xx: the gateway is up and answering
        return error_from_response(status, response.headers, body, status in self.retry.retry_statuses)

    def next_delay(self, error: EnsembleClientError, retry: int) -> float | None:
        """Seconds to wait before the next attempt, or None to raise `error`. Once this failure has
        opened the breaker, the caller gets the real error at once rather than a wait and then a
        CircuitOpenError."""
        if not error.retryable or self.breaker.state == "open":
            return None
        return self.retry.delay(retry, error.retry_after)


def request_body(model: str, messages: Messages, params: Mapping[str, Any]) -> dict[str, Any]:
    """A native request: `messages` may be a plain string (one user message)."""
    msgs = (
        [{"role": "user", "content": messages}] if isinstance(messages, str) else [dict(m) for m in messages]
    )
    body: dict[str, Any] = {"model": model, "messages": msgs}
    body.update((k, v) for k, v in params.items() if v is not None)
    return body


def request_headers(request_id: str | None, session_id: str | None) -> dict[str, str]:
    headers = {}
    if request_id:
        headers["x-request-id"] = request_id
    if session_id:
        headers["x-session-id"] = session_id
    return headers


class SseParser:
    """Server-sent events from lines (the line splitting, any of \\n, \\r\\n, \\r, is httpx's)."""

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []

    def feed(self, line: str) -> tuple[str, str] | None:
        """One line; returns (event, data) when the line completes an event."""
        if not line:
            if not self._data and not self._event:
                return None
            event, data = self._event or "message", "\n".join(self._data)
            self._event, self._data = "", []
            return event, data
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        return None


def monotonic() -> float:
    return time.monotonic()
