"""The part of `WireFormat.classify` every adapter shares: reading the upstream's JSON `error` object
and building the ProviderError. What differs per API (which field names the code, Gemini's
`retryDelay`) stays in the adapter."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from ensemble.error_types import from_provider
from ensemble.errors import ProviderError
from ensemble.providers.base import retry_after_seconds, retryable_status


def error_object(body: bytes) -> Any:
    """The `error` member of a JSON error body, or None when the body is not JSON or has none."""
    try:
        return orjson.loads(body).get("error") or None
    except (orjson.JSONDecodeError, AttributeError):
        return None


def upstream_error(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    message: Any = None,
    code: Any = None,
    retry_after_s: float | None = None,
    dialect: str = "",
    error_type: Any = None,
) -> ProviderError:
    """A ProviderError for an upstream HTTP error: message and code default to ones naming the status,
    retry-after to the header's; retryable per `retryable_status`; its canonical kind from the
    provider's `error_type` in its `dialect` (anthropic | openai | gemini), else from the status."""
    return ProviderError(
        str(message) if message else f"provider returned HTTP {status}",
        code=str(code) if code else f"upstream_{status}",
        upstream_status=status,
        retryable=retryable_status(status),
        retry_after_s=retry_after_s if retry_after_s is not None else retry_after_seconds(headers),
        body=body,
        headers=dict(headers),
        kind=from_provider(dialect, str(error_type) if error_type else None, status),
    )
