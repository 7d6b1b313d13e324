"""Rendering an EnsembleError in the shape of the route family that failed (SPEC §4, §5)."""

from __future__ import annotations

import math

import orjson

from ensemble.api import native, openai
from ensemble.errors import EnsembleError, MethodNotAllowed, Overloaded, ProviderError, RateLimited
from ensemble.server.http import Family, Headers


def effective_status(error: EnsembleError) -> int:
    """Other 4xx from a provider are returned as is (SPEC §6); credentials problems of ours are not the
    client's, so a provider's 401/403 stays a 502."""
    upstream = error.upstream_status if isinstance(error, ProviderError) else None
    if upstream is not None and 400 <= upstream < 500 and upstream not in (401, 403, 407, 408, 429):
        return upstream
    return error.status


def render(error: EnsembleError, family: Family, request_id: str) -> tuple[int, Headers, bytes]:
    status = effective_status(error)
    headers: Headers = list(error.headers)
    if isinstance(error, RateLimited | Overloaded) and error.retry_after_s is not None:
        headers.append(("retry-after", str(max(1, math.ceil(error.retry_after_s)))))
    if isinstance(error, MethodNotAllowed):
        headers.append(("allow", ", ".join(error.allowed)))
    if family == "openai":
        return status, headers, openai.error_body(error, status)
    if family == "anthropic":
        kind = {
            400: "invalid_request_error",
            401: "authentication_error",
            403: "permission_error",
            404: "not_found_error",
            413: "request_too_large",
            429: "rate_limit_error",
            503: "overloaded_error",
        }.get(status, "api_error")
        body = {"type": "error", "error": {"type": kind, "message": error.message}, "request_id": request_id}
        return status, headers, orjson.dumps(body)
    if family == "gemini":
        state = {
            400: "INVALID_ARGUMENT",
            401: "UNAUTHENTICATED",
            403: "PERMISSION_DENIED",
            404: "NOT_FOUND",
            413: "INVALID_ARGUMENT",
            429: "RESOURCE_EXHAUSTED",
            503: "UNAVAILABLE",
            504: "DEADLINE_EXCEEDED",
        }.get(status, "INTERNAL")
        return (
            status,
            headers,
            orjson.dumps({"error": {"code": status, "message": error.message, "status": state}}),
        )
    return status, headers, orjson.dumps(native.error_payload(error, request_id))
