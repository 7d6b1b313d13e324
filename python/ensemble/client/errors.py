"""Typed errors of the Ensemble client. Every failure a call can end in is one of these:

    EnsembleClientError                 (message, status, type, code, request_id, retryable, retry_after)
    ├── ConfigurationError              ENSEMBLE_URL is set but ENSEMBLE_API_KEY is empty
    ├── CircuitOpenError                the breaker is open: the call was not sent (retry_after = cool-down left)
    ├── APIConnectionError              no HTTP answer: refused, reset, closed early        (retryable)
    │   └── APITimeoutError             the per-call timeout ran out                        (not retried)
    ├── StreamError                     an `event: error` after the stream started (retryable as the server says)
    └── APIStatusError                  an HTTP error answer from the gateway
        ├── BadRequestError             400 invalid_request (and other 4xx not listed here)
        ├── AuthenticationError         401 authentication
        ├── PermissionDeniedError       403 permission
        ├── NotFoundError               404 not_found
        ├── RequestTooLargeError        413 request_too_large
        ├── RateLimitError              429 rate_limited                                    (retryable)
        ├── InternalServerError         500 internal
        ├── ProviderError               502 provider_error                                  (retryable)
        ├── OverloadedError             503 overloaded                                      (retryable)
        └── GatewayTimeoutError         504 timeout                                         (retryable)

`retryable` says whether the client's retry policy retries the error (429/502/503/504 and connection
errors by default); the client has already done so when the error reaches the caller.
"""

from __future__ import annotations

import email.utils
import time
from typing import Any

import httpx
import orjson


class EnsembleClientError(Exception):
    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        type: str | None = None,
        code: str | None = None,
        request_id: str | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.type = type
        self.code = code
        self.request_id = request_id
        self.retryable = retryable
        self.retry_after = retry_after

    def __str__(self) -> str:
        parts = [self.message]
        if self.status is not None:
            parts.append(f"status={self.status}")
        if self.code:
            parts.append(f"code={self.code}")
        if self.request_id:
            parts.append(f"request_id={self.request_id}")
        return " ".join(parts)


class ConfigurationError(EnsembleClientError):
    pass


class CircuitOpenError(EnsembleClientError):
    pass


class APIConnectionError(EnsembleClientError):
    pass


class APITimeoutError(APIConnectionError):
    pass


class StreamError(EnsembleClientError):
    pass


class APIStatusError(EnsembleClientError):
    status: int


class BadRequestError(APIStatusError):
    pass


class AuthenticationError(APIStatusError):
    pass


class PermissionDeniedError(APIStatusError):
    pass


class NotFoundError(APIStatusError):
    pass


class RequestTooLargeError(APIStatusError):
    pass


class RateLimitError(APIStatusError):
    pass


class InternalServerError(APIStatusError):
    pass


class ProviderError(APIStatusError):
    pass


class OverloadedError(APIStatusError):
    pass


class GatewayTimeoutError(APIStatusError):
    pass


_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    413: RequestTooLargeError,
    429: RateLimitError,
    500: InternalServerError,
    502: ProviderError,
    503: OverloadedError,
    504: GatewayTimeoutError,
}


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)


def error_from_response(status: int, headers: httpx.Headers, body: bytes, retryable: bool) -> APIStatusError:
    """Map an error answer (native shape `{"error": {type, message, code, request_id}}`) to its class."""
    detail: dict[str, Any] = {}
    try:
        data = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        detail = data["error"]
    message = detail.get("message")
    if not isinstance(message, str) or not message:
        text = body.decode("utf-8", "replace").strip()[:200]
        message = f"HTTP {status}" + (f": {text}" if text else "")
    cls = _BY_STATUS.get(status)
    if cls is None:
        cls = BadRequestError if 400 <= status < 500 else InternalServerError
    return cls(
        message,
        status=status,
        type=_str(detail.get("type")),
        code=_str(detail.get("code")),
        request_id=_str(detail.get("request_id")) or headers.get("x-request-id"),
        retryable=retryable,
        retry_after=parse_retry_after(headers.get("retry-after")),
    )


def stream_error(payload: Any, request_id: str | None) -> StreamError:
    """An `event: error` frame: `{"error": {type, message, code, retryable}}`."""
    detail = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(detail, dict):
        detail = {}
    return StreamError(
        _str(detail.get("message")) or "the stream failed after it started",
        type=_str(detail.get("type")),
        code=_str(detail.get("code")),
        request_id=_str(detail.get("request_id")) or request_id,
        retryable=bool(detail.get("retryable", False)),
    )


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None
