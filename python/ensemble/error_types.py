"""Error types, both ways, as one table (docs/errors.md).

Every error has one canonical type (the native API's `error.type`). A provider's own error type
maps to it (`from_provider`: Anthropic `overloaded_error` → `overloaded`, Gemini `UNAVAILABLE` →
`overloaded`, OpenAI `insufficient_quota` → `rate_limited`, …), and each client format writes it
as its own type and status (`for_ingress`: `overloaded` is Anthropic's `overloaded_error` with HTTP
529, OpenAI's `server_error` with 503, Gemini's `UNAVAILABLE` with 503), so what the provider meant
reaches the client in the client's words.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ensemble.errors import EnsembleError, ProviderError

Ingress = Literal["openai", "anthropic", "gemini"]


@dataclass(frozen=True)
class Row:
    canonical: str
    status: int  # the native routes' status
    openai: tuple[str, int]  # (error.type, HTTP status)
    anthropic: tuple[str, int]  # (error.type, HTTP status)
    gemini: tuple[str, int]  # (error.status, HTTP status = error.code)


TABLE: tuple[Row, ...] = (
    Row(
        "invalid_request",
        400,
        ("invalid_request_error", 400),
        ("invalid_request_error", 400),
        ("INVALID_ARGUMENT", 400),
    ),
    Row(
        "authentication",
        401,
        ("authentication_error", 401),
        ("authentication_error", 401),
        ("UNAUTHENTICATED", 401),
    ),
    Row(
        "budget_exceeded",
        402,
        ("budget_exceeded", 402),
        ("budget_exceeded", 402),
        ("RESOURCE_EXHAUSTED", 402),
    ),
    Row("permission", 403, ("permission_error", 403), ("permission_error", 403), ("PERMISSION_DENIED", 403)),
    Row("not_found", 404, ("not_found_error", 404), ("not_found_error", 404), ("NOT_FOUND", 404)),
    Row(
        "request_too_large",
        413,
        ("invalid_request_error", 413),
        ("request_too_large", 413),
        ("INVALID_ARGUMENT", 413),
    ),
    Row(
        "rate_limited", 429, ("rate_limit_error", 429), ("rate_limit_error", 429), ("RESOURCE_EXHAUSTED", 429)
    ),
    Row("internal", 500, ("server_error", 500), ("api_error", 500), ("INTERNAL", 500)),
    Row("provider_error", 502, ("server_error", 502), ("api_error", 502), ("INTERNAL", 502)),
    Row("overloaded", 503, ("server_error", 503), ("overloaded_error", 529), ("UNAVAILABLE", 503)),
    Row("timeout", 504, ("server_error", 504), ("timeout_error", 504), ("DEADLINE_EXCEEDED", 504)),
)
_BY_TYPE = {row.canonical: row for row in TABLE}
_BY_STATUS = {row.status: row for row in TABLE}

# What each provider's own error types mean, canonically (its documented error types; Gemini's are
# the google.rpc status names). Anything else is read from the HTTP status (`_STATUS`).
PROVIDER_TYPES: dict[str, dict[str, str]] = {
    "anthropic": {
        "invalid_request_error": "invalid_request",
        "authentication_error": "authentication",
        "billing_error": "permission",
        "permission_error": "permission",
        "not_found_error": "not_found",
        "request_too_large": "request_too_large",
        "rate_limit_error": "rate_limited",
        "api_error": "provider_error",
        "timeout_error": "timeout",
        "overloaded_error": "overloaded",
    },
    "openai": {
        "invalid_request_error": "invalid_request",
        "authentication_error": "authentication",
        "permission_error": "permission",
        "not_found_error": "not_found",
        "rate_limit_error": "rate_limited",
        "insufficient_quota": "rate_limited",
        "requests": "rate_limited",
        "tokens": "rate_limited",
        "server_error": "provider_error",
        "engine_overloaded": "overloaded",
        "overloaded_error": "overloaded",
    },
    "gemini": {
        "INVALID_ARGUMENT": "invalid_request",
        "FAILED_PRECONDITION": "invalid_request",
        "OUT_OF_RANGE": "invalid_request",
        "UNAUTHENTICATED": "authentication",
        "PERMISSION_DENIED": "permission",
        "NOT_FOUND": "not_found",
        "RESOURCE_EXHAUSTED": "rate_limited",
        "INTERNAL": "provider_error",
        "UNKNOWN": "provider_error",
        "UNAVAILABLE": "overloaded",
        "DEADLINE_EXCEEDED": "timeout",
    },
}
_STATUS = {
    400: "invalid_request",
    401: "authentication",
    402: "permission",
    403: "permission",
    404: "not_found",
    413: "request_too_large",
    422: "invalid_request",
    429: "rate_limited",
    503: "overloaded",
    504: "timeout",
    529: "overloaded",
}


def from_provider(dialect: str, error_type: str | None, status: int | None) -> str:
    """The canonical type of a provider's error: by its own type name, else by HTTP status."""
    kind = PROVIDER_TYPES.get(dialect, {}).get(error_type or "")
    if kind is None and status is not None:
        kind = _STATUS.get(status, "provider_error" if status >= 500 else "invalid_request")
    return kind or "provider_error"


def for_ingress(ingress: Ingress, canonical: str, status: int) -> tuple[str, int]:
    """(type, status) of a canonical error in a client format. `status` is the error's HTTP status
    on the native routes; one the table does not list for this type (405, or a provider's 409/422
    returned as is) is kept."""
    row = _BY_TYPE.get(canonical) or _BY_STATUS.get(status) or _BY_TYPE["internal"]
    kind, mapped = getattr(row, ingress)
    return kind, mapped if status == row.status else status


def resolve(error: EnsembleError) -> tuple[str, int]:
    """(canonical type, native HTTP status) of an error. A provider's error keeps its meaning: an
    upstream overload is `overloaded` (503), a timeout `timeout` (504); the provider refusing the
    request (400, 404, 409, 422, …) is returned with its own status; its 401/403 are about the
    gateway's credentials, not the caller's, so they stay a `provider_error` (502)."""
    if not isinstance(error, ProviderError) or error.kind is None:
        return error.type, _passthrough(error) or error.status
    kind = error.kind
    if kind in ("authentication", "permission", "internal"):
        kind = "provider_error"
    status = _passthrough(error)
    if status is None:
        if kind in ("invalid_request", "not_found", "request_too_large"):
            kind = "provider_error"  # a 4xx type on a 5xx (or no) status: the upstream misbehaved
        status = _BY_TYPE[kind].status if kind in ("overloaded", "timeout", "rate_limited") else error.status
    return kind, status


def _passthrough(error: EnsembleError) -> int | None:
    """A provider's 4xx is returned as is (docs/routing.md), except its credential errors
    (401/403/407) and the ones the gateway retries elsewhere (408/429)."""
    upstream = error.upstream_status if isinstance(error, ProviderError) else None
    if upstream is not None and 400 <= upstream < 500 and upstream not in (401, 403, 407, 408, 429):
        return upstream
    return None


def render_as(ingress: Ingress, error: EnsembleError) -> tuple[str, int]:
    """(type, HTTP status) of `error` in a client format."""
    kind, status = resolve(error)
    return for_ingress(ingress, kind, status)
