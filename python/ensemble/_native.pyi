"""Typed stubs for the Rust extension ``ensemble._native`` (built from ``rust/``).

PyO3 classes are constructed by ``__new__`` (there is no ``__init__``), so the constructors are
stubbed as ``__new__``; calling ``SseParser(...)`` etc. is typed the same either way.
"""

from collections.abc import Sequence
from typing import Any, Protocol, Self, final

__all__ = [
    "AffinityTable",
    "EventRunScanner",
    "H2Pool",
    "H2Stream",
    "KeyTable",
    "PromptKeys",
    "RateLimiter",
    "SseError",
    "SseParser",
    "StreamScanner",
    "__version__",
    "build_profile",
    "constant_time_eq",
    "monotonic_ms",
    "prefix_fingerprint",
    "prompt_keys",
    "responses_deltas",
    "sha256_digest",
    "usage_event",
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
class StreamScanner:
    """The same-format fast path's scanner: frames one provider stream (``openai``, ``anthropic``
    or ``gemini`` events) and decodes its common events natively, one call per network read."""

    def __new__(cls, format: str, merge: bool = True) -> Self:
        """``merge``: consecutive fragments of one block become one run per read (False: one run
        per event)."""
    def feed(self, chunk: bytes) -> tuple[int, list[tuple[int, int, str] | tuple[int, str, str]]]:
        """``(cut, items)``: the length of the read's prefix that ends at its last event boundary,
        and its items in order: ``(kind, key, text)`` runs (0 text, 1 thinking, 2 tool arguments,
        3 the latest usage object as JSON) and ``(-1, event_type, data)`` events for the
        provider's decoder. Raises ``SseError`` on bounds."""
    def close(self) -> None:
        """End of stream: discard any unterminated event."""
    @property
    def counts(self) -> tuple[int, int]:
        """(events decoded natively, events handed to the decoder) so far."""

@final
class EventRunScanner:
    """A ``StreamScanner`` (one run per event) for a client format that renders one event per
    upstream event: the text of consecutive events for one block comes as one run with its
    events' ends."""

    def __new__(cls, format: str) -> Self: ...
    def feed(
        self, chunk: bytes
    ) -> tuple[int, list[tuple[int, int, str] | tuple[int, str, str] | tuple[int, int, tuple[str, bytes]]]]:
        """``StreamScanner.feed``'s items, but two or more consecutive text runs of one block are
        one ``(4, key, (text, ends))``: ``ends`` holds where each event's fragment ends (UTF-8
        byte offsets into ``text``, little-endian u32). Raises ``SseError`` on bounds."""
    def close(self) -> None:
        """End of stream: discard any unterminated event."""

def responses_deltas(prefix: bytes, suffix: bytes, seq: int, text: str, ends: bytes) -> tuple[bytes, int]:
    """One Responses delta event per non-empty fragment of ``text`` (cut at ``ends``, as in
    ``EventRunScanner.feed``): ``prefix``, the sequence number (rising from ``seq``),
    ``,"delta":``, the fragment as JSON (as orjson writes it), ``suffix``. Returns the events and
    the next sequence number; ``ValueError`` when ``ends`` does not cut the whole text."""

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
    def load(self, scopes: list[str], now_ms: int) -> tuple[list[float], list[int]]:
        """``([utilisation per scope], [requests per scope])``: utilisation is the fullest of RPM/TPM
        against the scope's configured limits, -1.0 when it has none."""
    def rank(
        self,
        scopes: list[str],
        floors: list[float],
        weights: list[int],
        in_flight: list[int],
        shift: int,
        now_ms: int,
    ) -> tuple[list[int], list[float]]:
        """A router's pool ranked, least utilised first: ``(order, utilisations in that order)``.

        ``floors`` (the provider's own used fraction, -1 for none), ``weights`` and ``in_flight``
        have one entry per scope or are empty; the pool is rotated by ``shift`` before a stable sort.
        """
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

class _Message(Protocol):
    """What ``prompt_keys`` reads of a message (``ensemble.types.Message``)."""

    @property
    def role(self) -> str: ...
    @property
    def content(self) -> object: ...
    def text(self) -> str: ...

@final
class PromptKeys:
    """The affinity keys of one request (fingerprints are ``model_tag << 32 | crc32c``)."""

    @property
    def full(self) -> int: ...
    @property
    def full_tokens(self) -> int: ...
    @property
    def previous(self) -> int | None: ...
    @property
    def previous_tokens(self) -> int: ...
    @property
    def lead(self) -> int | None: ...
    @property
    def lead_tokens(self) -> int: ...
    @property
    def session(self) -> str | None: ...

def prompt_keys(model_tag: int, session_id: str | None, messages: Sequence[_Message]) -> PromptKeys:
    """Fingerprints of the whole prompt, the previous turn and the leading system prompt; an empty
    session id is no session. String ``content`` is hashed in place, other content via ``text()``."""

@final
class AffinityTable:
    """Prompt-prefix / session -> the endpoints holding it (endpoint number, cached tokens; up to
    three, most recent first, each expiring on its own); LRU bounded."""

    def __new__(cls, max_entries: int) -> Self: ...
    def lookup(self, keys: PromptKeys, now_ms: int) -> list[tuple[int, int]] | None:
        """``[(endpoint, estimated cached prompt tokens), ...]`` of the endpoints holding a prefix
        of this prompt, the most tokens first; None when no endpoint does."""
    def remember(self, keys: PromptKeys, endpoint: int, now_ms: int, ttl_ms: int) -> None: ...
    @property
    def max_entries(self) -> int: ...
    @property
    def hits(self) -> int: ...
    @property
    def misses(self) -> int: ...
    @property
    def evictions(self) -> int: ...
    def __len__(self) -> int: ...

def usage_event(data: bytes) -> tuple[int, int] | None:
    """(where the event holding the first ``"usage": {`` of ``data`` starts, the offset just after
    that ``{``), or None."""

def monotonic_ms() -> int:
    """Milliseconds of the monotonic clock (``CLOCK_MONOTONIC`` on Unix)."""

def sha256_digest(data: str) -> bytes: ...
def constant_time_eq(a: bytes, b: bytes) -> bool: ...
def prefix_fingerprint(parts: list[bytes]) -> list[int]: ...

@final
class H2Stream:
    """One HTTP/2 stream's handle; dropping it cancels the stream."""

    def release(self, n: int) -> None:
        """The consumer took ``n`` body bytes: the provider may send that much more."""
    def cancel(self) -> None:
        """RST_STREAM(CANCEL) if open; never opened if still queued. Idempotent."""

@final
class H2Pool:
    """The HTTP/2 upstream pool, on its own thread (rust/src/h2client/)."""

    def __new__(
        cls, connect_timeout: float, max_connections_per_host: int = 100, stream_window: int = 262144
    ) -> Self: ...
    def fileno(self) -> int:
        """Readable when ``drain()`` has events."""
    def submit(
        self,
        token: int,
        tls: bool,
        host: str,
        port: int,
        authority: str,
        path: str,
        headers: list[tuple[str, str]],
        body: bytes,
    ) -> H2Stream: ...
    def drain(self) -> list[Any]:
        """Flat ``token, kind, payload`` triples: 0 headers ``(status, dict)``, 1 data ``bytes``,
        2 end, 3 failure ``(code, message)``, 4 fall back to HTTP/1.1."""
    def connections(self) -> int:
        """Open HTTP/2 connections (all hosts)."""
    def close(self) -> None: ...
