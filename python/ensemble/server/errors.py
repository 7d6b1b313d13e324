"""Rendering an EnsembleError in the shape of the route family that failed (see the README's routes,
docs/formats.md); types and statuses come from the one table in `error_types` (docs/errors.md)."""

from __future__ import annotations

import math

import orjson

from ensemble import error_types
from ensemble.api import anthropic, gemini, native, openai
from ensemble.errors import EnsembleError, MethodNotAllowed, Overloaded, RateLimited
from ensemble.server.http import Family, Headers


def client_status(error: EnsembleError, family: Family) -> int:
    """The HTTP status a client of this route family gets for `error`: the one rendered, and the
    one its request-log record carries (docs/accounting.md). From the one table (error_types): an
    upstream overload is 529 for Anthropic clients, 503 for the others."""
    kind, status = error_types.resolve(error)
    if family in ("openai", "anthropic", "gemini"):
        return error_types.for_ingress(family, kind, status)[1]
    return status


def render(error: EnsembleError, family: Family, request_id: str) -> tuple[int, Headers, bytes]:
    kind, status = error_types.resolve(error)
    headers: Headers = list(error.headers)
    if isinstance(error, RateLimited | Overloaded) and error.retry_after_s is not None:
        headers.append(("retry-after", str(max(1, math.ceil(error.retry_after_s)))))
    if isinstance(error, MethodNotAllowed):
        headers.append(("allow", ", ".join(error.allowed)))
    if family in ("openai", "anthropic", "gemini"):
        name, status = error_types.for_ingress(family, kind, status)
        if family == "openai":
            return status, headers, openai.error_body(error, name)
        if family == "anthropic":
            return status, headers, anthropic.error_body(error, name, request_id)
        return status, headers, gemini.error_payload(error, name, status)
    return status, headers, orjson.dumps(native.error_payload(error, request_id, kind))
