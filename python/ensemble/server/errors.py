"""Rendering an EnsembleError in the shape of the route family that failed (see the README's routes, docs/formats.md)."""

from __future__ import annotations

import math

import orjson

from ensemble.api import anthropic, gemini, native, openai
from ensemble.errors import EnsembleError, MethodNotAllowed, Overloaded, ProviderError, RateLimited
from ensemble.server.http import Family, Headers


def effective_status(error: EnsembleError) -> int:
    """Other 4xx from a provider are returned as is (see docs/routing.md); credentials problems of ours are not the
    client's, so a provider's 401/403 stays a 502."""
    upstream = error.upstream_status if isinstance(error, ProviderError) else None
    if upstream is not None and 400 <= upstream < 500 and upstream not in (401, 403, 407, 408, 429):
        return upstream
    return error.status


def client_status(error: EnsembleError, family: Family) -> int:
    """The HTTP status a client of this route family gets for `error`: the one rendered, and the
    one its request-log record carries (docs/accounting.md)."""
    return effective_status(error)


def render(error: EnsembleError, family: Family, request_id: str) -> tuple[int, Headers, bytes]:
    status = client_status(error, family)
    headers: Headers = list(error.headers)
    if isinstance(error, RateLimited | Overloaded) and error.retry_after_s is not None:
        headers.append(("retry-after", str(max(1, math.ceil(error.retry_after_s)))))
    if isinstance(error, MethodNotAllowed):
        headers.append(("allow", ", ".join(error.allowed)))
    if family == "openai":
        return status, headers, openai.error_body(error, status)
    if family == "anthropic":
        kind = anthropic.error_type(status)
        body = {"type": "error", "error": {"type": kind, "message": error.message}, "request_id": request_id}
        return status, headers, orjson.dumps(body)
    if family == "gemini":
        return status, headers, gemini.error_payload(error, status)
    return status, headers, orjson.dumps(native.error_payload(error, request_id))
