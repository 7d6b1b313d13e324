"""The error-type table both ways (docs/errors.md): provider types to canonical ones, canonical ones
to each client format's type and status, and how a ProviderError resolves."""

from __future__ import annotations

import pytest

from ensemble import error_types
from ensemble.errors import (
    InvalidRequest,
    MethodNotAllowed,
    Overloaded,
    ProviderError,
    RateLimited,
    UpstreamTimeout,
)


@pytest.mark.parametrize(
    ("dialect", "error_type", "status", "canonical"),
    [
        ("anthropic", "overloaded_error", 529, "overloaded"),
        ("anthropic", "overloaded_error", None, "overloaded"),  # in-band, mid-stream
        ("anthropic", "api_error", 500, "provider_error"),
        ("anthropic", "timeout_error", 504, "timeout"),
        ("anthropic", "rate_limit_error", 429, "rate_limited"),
        ("anthropic", "request_too_large", 413, "request_too_large"),
        ("openai", "insufficient_quota", 429, "rate_limited"),
        ("openai", "server_error", 500, "provider_error"),
        ("openai", None, 503, "overloaded"),
        ("gemini", "UNAVAILABLE", 503, "overloaded"),
        ("gemini", "RESOURCE_EXHAUSTED", 429, "rate_limited"),
        ("gemini", "DEADLINE_EXCEEDED", 504, "timeout"),
        ("gemini", "FAILED_PRECONDITION", 400, "invalid_request"),
        ("gemini", "INTERNAL", None, "provider_error"),
        ("", None, 529, "overloaded"),
        ("", None, 418, "invalid_request"),
        ("", None, None, "provider_error"),
    ],
)
def test_provider_types_map_to_canonical(
    dialect: str, error_type: str | None, status: int | None, canonical: str
) -> None:
    assert error_types.from_provider(dialect, error_type, status) == canonical


@pytest.mark.parametrize(
    ("canonical", "status", "openai", "anthropic", "gemini"),
    [
        ("overloaded", 503, ("server_error", 503), ("overloaded_error", 529), ("UNAVAILABLE", 503)),
        ("timeout", 504, ("server_error", 504), ("timeout_error", 504), ("DEADLINE_EXCEEDED", 504)),
        (
            "rate_limited",
            429,
            ("rate_limit_error", 429),
            ("rate_limit_error", 429),
            ("RESOURCE_EXHAUSTED", 429),
        ),
        (
            "invalid_request",
            405,
            ("invalid_request_error", 405),
            ("invalid_request_error", 405),
            ("INVALID_ARGUMENT", 405),
        ),
        (
            "invalid_request",
            422,
            ("invalid_request_error", 422),
            ("invalid_request_error", 422),
            ("INVALID_ARGUMENT", 422),
        ),
        ("provider_error", 502, ("server_error", 502), ("api_error", 502), ("INTERNAL", 502)),
    ],
)
def test_canonical_types_in_each_format(
    canonical: str, status: int, openai: tuple[str, int], anthropic: tuple[str, int], gemini: tuple[str, int]
) -> None:
    assert error_types.for_ingress("openai", canonical, status) == openai
    assert error_types.for_ingress("anthropic", canonical, status) == anthropic
    assert error_types.for_ingress("gemini", canonical, status) == gemini


def test_every_canonical_type_has_a_row_for_every_format() -> None:
    types = {row.canonical for row in error_types.TABLE}
    assert len(types) == len(error_types.TABLE)
    for kinds in error_types.PROVIDER_TYPES.values():
        assert set(kinds.values()) <= types


def _upstream(status: int | None, kind: str, code: str = "x") -> ProviderError:
    return ProviderError("upstream said no", code=code, upstream_status=status, kind=kind)


@pytest.mark.parametrize(
    ("error", "resolved"),
    [
        (_upstream(529, "overloaded"), ("overloaded", 503)),
        (_upstream(None, "overloaded"), ("overloaded", 503)),  # mid-stream event
        (_upstream(503, "overloaded"), ("overloaded", 503)),
        (_upstream(500, "provider_error"), ("provider_error", 502)),
        (_upstream(401, "authentication"), ("provider_error", 502)),  # the gateway's credentials
        (_upstream(403, "permission"), ("provider_error", 502)),
        (_upstream(422, "invalid_request"), ("invalid_request", 422)),  # returned as is
        (_upstream(404, "not_found"), ("not_found", 404)),
        (_upstream(500, "invalid_request"), ("provider_error", 502)),  # a 4xx type on a 5xx
        (UpstreamTimeout("slow"), ("timeout", 504)),
        (ProviderError("no kind", upstream_status=409), ("provider_error", 409)),
        (InvalidRequest("bad"), ("invalid_request", 400)),
        (MethodNotAllowed("no", ("GET",)), ("invalid_request", 405)),
        (RateLimited("slow down", retry_after_s=1), ("rate_limited", 429)),
        (Overloaded("busy"), ("overloaded", 503)),
    ],
)
def test_resolve(error: Exception, resolved: tuple[str, int]) -> None:
    assert error_types.resolve(error) == resolved  # type: ignore[arg-type]


def test_an_upstream_overload_is_529_for_anthropic_clients() -> None:
    assert error_types.render_as("anthropic", _upstream(529, "overloaded")) == ("overloaded_error", 529)
    assert error_types.render_as("gemini", _upstream(None, "overloaded")) == ("UNAVAILABLE", 503)
    assert error_types.render_as("openai", _upstream(529, "overloaded")) == ("server_error", 503)
