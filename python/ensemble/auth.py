"""Client authentication: find the caller's key record from whichever header its SDK uses (see docs/security.md)."""

from __future__ import annotations

from typing import Protocol

from ensemble._native import KeyTable
from ensemble.errors import AuthenticationFailed, PermissionDenied
from ensemble.storage.keys import KeyRecord


class HeaderLookup(Protocol):
    def get(self, key: str, default: None = None) -> str | None: ...


def presented_key(headers: HeaderLookup) -> str | None:
    """The key from `Authorization: Bearer`, `x-api-key` (Anthropic SDKs) or `x-goog-api-key` (Gemini)."""
    auth = headers.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return headers.get("x-api-key") or headers.get("x-goog-api-key") or None


class Authenticator:
    def __init__(self, table: KeyTable) -> None:
        self.table = table

    def authenticate(self, key: str | None) -> KeyRecord:
        if not key:
            raise AuthenticationFailed(
                "missing API key: send 'Authorization: Bearer ens_…' (or x-api-key / x-goog-api-key)",
                code="missing_api_key",
            )
        record = self.table.lookup(key)
        if record is None:
            raise AuthenticationFailed("invalid API key", code="invalid_api_key")
        assert isinstance(record, KeyRecord)
        if record.status != "active":
            raise AuthenticationFailed(f"this API key is {record.status}", code=f"key_{record.status}")
        return record

    @staticmethod
    def authorize_model(record: KeyRecord, model: str) -> None:
        if not record.allows(model):
            raise PermissionDenied(f"this API key may not use model {model!r}", code="model_not_allowed")
