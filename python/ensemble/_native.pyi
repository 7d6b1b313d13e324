"""Typed stubs for the Rust extension ``ensemble._native`` (built from ``rust/``).

PyO3 classes are constructed by ``__new__`` (there is no ``__init__``), so the constructors are
stubbed as ``__new__``; calling ``SseParser(...)`` etc. is typed the same either way.
"""

from typing import Self, final

__all__ = [
    "KeyTable",
    "RateLimiter",
    "SseError",
    "SseParser",
    "__version__",
    "build_profile",
    "constant_time_eq",
    "prefix_fingerprint",
    "sha256_digest",
]

__version__: str
build_profile: str

class SseError(ValueError):
    """An upstream event stream broke a bound (line or event size). Terminal for that stream."""

@final
class SseParser:
    """Incremental WHATWG server-sent-events parser."""

    def __new__(cls, max_line_bytes: int = 1048576, max_event_bytes: int = 8388608) -> Self: ...
    def feed(self, chunk: bytes) -> list[tuple[str, str, str, int | None]]:
        """Events completed by ``chunk``: ``(event_type, data, last_event_id, retry_ms_or_None)``.

        ``retry`` is the value set inside that event's block. Raises ``SseError`` on bounds.
        """
    def close(self) -> None:
        """End of stream: discard any unterminated event (last event id is kept)."""
    @property
    def last_event_id(self) -> str: ...
    @property
    def reconnection_time(self) -> int | None: ...

@final
class RateLimiter:
    """Sliding-window RPM/TPM counters per scope; injected clock (``now_ms``)."""

    def __new__(cls, window_ms: int = 60000, slots: int = 60) -> Self: ...
    @property
    def window_ms(self) -> int: ...
    @property
    def slots(self) -> int: ...
    def configure(self, scope: str, rpm: int, tpm: int) -> None: ...
    def remove(self, scope: str) -> bool: ...
    def admit(self, scopes: list[str], tokens: int, now_ms: int) -> tuple[bool, int, int]:
        """``(admitted, retry_after_ms, index_of_first_refusing_scope or -1)``."""
    def check(self, scopes: list[str], tokens: int, now_ms: int) -> tuple[bool, int, int]:
        """What ``admit`` would answer now, without reserving anything."""
    def reconcile(
        self, scopes: list[str], reserved_tokens: int, actual_tokens: int, admitted_at_ms: int, now_ms: int
    ) -> None: ...
    def release(self, scopes: list[str], reserved_tokens: int, admitted_at_ms: int, now_ms: int) -> None:
        """Undo an admission: the request *and* its reserved tokens are returned to every listed scope."""
    def snapshot(self, scope: str, now_ms: int) -> tuple[int, int, int, int, int]:
        """``(limit_requests, remaining_requests, limit_tokens, remaining_tokens, reset_ms)``."""
    def usage(self, scope: str, now_ms: int) -> tuple[int, int]: ...
    def drain_deltas(self) -> list[tuple[str, int, int]]: ...
    def block_until(self, scope: str, until_ms: int) -> None:
        """Refuse admissions to ``scope`` until ``until_ms`` (upstream 429 / no upstream capacity left)."""
    def set_global(self, scope: str, requests: int, tokens: int, now_ms: int) -> None: ...
    def __len__(self) -> int: ...

@final
class KeyTable:
    """SHA-256 digest (32 bytes) -> record (any Python object)."""

    def __new__(cls) -> Self: ...
    def load(self, entries: list[tuple[bytes, object]]) -> None: ...
    def upsert(self, digest: bytes, record: object) -> None: ...
    def remove(self, digest: bytes) -> bool: ...
    def lookup(self, api_key: str) -> object | None: ...
    def lookup_digest(self, digest: bytes) -> object | None: ...
    def __len__(self) -> int: ...

def sha256_digest(data: str) -> bytes: ...
def constant_time_eq(a: bytes, b: bytes) -> bool: ...
def prefix_fingerprint(parts: list[bytes]) -> list[int]: ...
