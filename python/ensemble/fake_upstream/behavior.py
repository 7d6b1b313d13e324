"""The behaviour model of the fake upstream: per-endpoint config, one-shot behaviours, recordings.

State is per worker process (run with ``--workers 1`` when tests use the control API).

    FakeState
     └─ EndpointState (one per virtual endpoint name, created on first use)
          ├─ config: EndpointConfig        (PUT /_fake/config; starts as a copy of the CLI defaults)
          ├─ queue: deque[Behavior]        (POST /_fake/enqueue; FIFO, one entry consumed per request)
          ├─ records: deque[RequestRecord] (GET /_fake/requests; bounded ring buffer)
          ├─ batches: dict[str, Batch]     (Anthropic Message Batches)
          └─ rate-limit window counters    (x-ratelimit-* / anthropic-ratelimit-* headers)
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import orjson

FRAMINGS = ("lf", "crlf", "cr", "mixed", "ndjson")
RECORD_LIMIT = 2_000  # recordings kept per endpoint (oldest dropped)


class ControlError(ValueError):
    """A bad control-API payload (answered with 400)."""


def _as_int(name: str, value: Any, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise ControlError(f"{name}: expected an integer, got {value!r}")
    if value < minimum:
        raise ControlError(f"{name}: must be >= {minimum}")
    return int(value)


def _as_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ControlError(f"{name}: expected a number, got {value!r}")
    if value < 0:
        raise ControlError(f"{name}: must be >= 0")
    return float(value)


def _as_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ControlError(f"{name}: expected a boolean, got {value!r}")
    return value


def _as_opt_str(name: str, value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ControlError(f"{name}: expected a string or null, got {value!r}")
    return value


def _as_opt_int(name: str, value: Any) -> int | None:
    return None if value is None else _as_int(name, value)


@dataclass(slots=True)
class EndpointConfig:
    """Standing behaviour of one endpoint. Field names are the ``PUT /_fake/config`` keys."""

    latency_ms: float = 0.0  # delay before the response starts (time to first byte)
    chunks: int = 20  # answer pieces (= completion tokens of a text answer)
    chunk_gap_ms: float = 0.0  # delay between stream events
    cached_tokens: int = 0  # reported prompt-cache reads
    cache_creation_tokens: int = 0  # reported prompt-cache writes (Anthropic only)
    reasoning_tokens: int = 0  # reported reasoning/thinking tokens
    # lf | crlf | cr | mixed SSE line endings, or ndjson (each event's data on one line, no SSE);
    # None = the provider's own (Gemini crlf, else lf)
    framing: str | None = None
    split_bytes: int = 0  # >0: write each stream event in pieces of this many bytes
    comments: bool = False  # interleave ": keepalive" SSE comment lines between events
    require_api_key: str | None = None  # 401 in provider shape when the received key differs
    redacted_thinking: bool = False  # Anthropic: add a redacted_thinking block when thinking is on
    # OpenAI streams: end with the usage chunk even without stream_options.include_usage (as
    # Mistral and Together do, which refuse or ignore that option)
    stream_usage_always: bool = False
    batch_delay_ms: float = 500.0  # Anthropic batches end this long after creation
    ratelimit_requests: int = 10_000  # limit reported in rate-limit headers (per minute)
    ratelimit_tokens: int = 2_000_000
    ratelimit_remaining_requests: int | None = None  # force the reported remaining values
    ratelimit_remaining_tokens: int | None = None
    record: bool = True  # keep request recordings (GET /_fake/requests)
    prompt_cache: bool = False  # simulate the provider's prompt cache (prompt_cache.py)
    prompt_cache_ttl_ms: float = 300_000.0
    # {"name": tool, "arguments": {...}}: the tool call to make when that tool is offered (content.py)
    tool_call: dict[str, Any] | None = None

    def update(self, data: dict[str, Any]) -> None:
        """Apply a partial update; raises ControlError on unknown keys or bad values."""
        parsed: dict[str, Any] = {}
        for key, value in data.items():
            if key in ("latency_ms", "chunk_gap_ms", "batch_delay_ms", "prompt_cache_ttl_ms"):
                parsed[key] = _as_float(key, value)
            elif key == "chunks":
                parsed[key] = _as_int(key, value, 1)
            elif key in (
                "cached_tokens",
                "cache_creation_tokens",
                "reasoning_tokens",
                "split_bytes",
                "ratelimit_requests",
                "ratelimit_tokens",
            ):
                parsed[key] = _as_int(key, value)
            elif key in ("ratelimit_remaining_requests", "ratelimit_remaining_tokens"):
                parsed[key] = _as_opt_int(key, value)
            elif key in ("comments", "redacted_thinking", "record", "stream_usage_always", "prompt_cache"):
                parsed[key] = _as_bool(key, value)
            elif key == "require_api_key":
                parsed[key] = _as_opt_str(key, value)
            elif key == "tool_call":
                if value is not None and not (isinstance(value, dict) and isinstance(value.get("name"), str)):
                    raise ControlError('tool_call: expected {"name": str, "arguments": object} or null')
                parsed[key] = value
            elif key == "framing":
                if value is not None and value not in FRAMINGS:
                    raise ControlError(f"framing: expected one of {', '.join(FRAMINGS)} or null")
                parsed[key] = value
            else:
                raise ControlError(f"{key}: unknown config field")
        for key, value in parsed.items():
            setattr(self, key, value)

    def copy(self) -> EndpointConfig:
        return dataclasses.replace(self)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def is_plain(self) -> bool:
        """True when responses can come straight from the precomputed-template cache."""
        return self.latency_ms == 0 and self.require_api_key is None and not self.prompt_cache


@dataclass(slots=True)
class Behavior:
    """A one-shot behaviour consumed by one request (``count`` copies are queued)."""

    status: int | None = None  # answer with this error status in the provider's shape
    retry_after: float | None = None  # seconds, sent as retry-after (and Gemini RetryInfo)
    message: str | None = None  # error message override
    stall_before_first_byte_ms: float = 0.0
    stall_after_chunks: int | None = None
    stall_ms: float = 0.0
    reset_after_chunks: int | None = None  # TCP RST after k events
    malformed_after_chunks: int | None = None  # garbage event after k events, then end
    error_event_after_chunks: int | None = None  # provider error event after k events, then end
    close_connection: bool = False  # close the connection without any response
    # Replay a recorded answer verbatim instead of the generated one: `replay_json` for a JSON
    # request; `stream_body` for a streaming one, as the raw event-stream text (split into events on
    # blank lines) or a list of writes (one network write per item, as a recording captured them).
    # Each event or write counts for chunk_gap_ms and the mid-stream behaviours.
    replay_json: Any = None
    stream_body: list[str] | None = None

    @classmethod
    def parse(cls, data: Any) -> tuple[Behavior, int]:
        if not isinstance(data, dict):
            raise ControlError("behaviors[]: expected an object")
        b = cls()
        count = 1
        for key, value in data.items():
            if key == "status":
                b.status = _as_int(key, value, 100)
                if b.status > 599:
                    raise ControlError("status: must be an HTTP status")
            elif key == "retry_after":
                b.retry_after = _as_float(key, value)
            elif key == "message":
                b.message = _as_opt_str(key, value)
            elif key == "count":
                count = _as_int(key, value, 1)
            elif key in ("stall_before_first_byte_ms", "stall_ms"):
                setattr(b, key, _as_float(key, value))
            elif key in (
                "stall_after_chunks",
                "reset_after_chunks",
                "malformed_after_chunks",
                "error_event_after_chunks",
            ):
                setattr(b, key, _as_int(key, value))
            elif key == "close_connection":
                b.close_connection = _as_bool(key, value)
            elif key == "replay_json":
                if not isinstance(value, dict | list):
                    raise ControlError("replay_json: expected a JSON object or array")
                b.replay_json = value
            elif key == "stream_body":
                if isinstance(value, str):
                    value = [e for e in re.split(r"(?<=\n\n)|(?<=\r\n\r\n)", value) if e]
                if not isinstance(value, list) or not all(isinstance(i, str) for i in value):
                    raise ControlError("stream_body: expected a string or a list of strings")
                b.stream_body = value
            else:
                raise ControlError(f"{key}: unknown behavior field")
        return b, count

    @property
    def mid_stream(self) -> bool:
        return (
            self.stall_after_chunks is not None
            or self.reset_after_chunks is not None
            or self.malformed_after_chunks is not None
            or self.error_event_after_chunks is not None
        )

    def to_json(self) -> dict[str, Any]:
        defaults = {"stall_before_first_byte_ms": 0.0, "stall_ms": 0.0, "close_connection": False}
        return {
            k: v
            for k, v in dataclasses.asdict(self).items()
            if v is not None and not (k in defaults and v == defaults[k])
        }


class RequestRecord:
    """One received request. Headers/body are kept raw and decoded only when listed."""

    __slots__ = (
        "behavior",
        "body",
        "client_disconnected",
        "disconnected_at",
        "endpoint",
        "finished_at",
        "headers",
        "http_version",
        "method",
        "path",
        "peer",
        "query",
        "seq",
        "started_at",
        "status",
        "stream",
    )

    def __init__(
        self,
        seq: int,
        method: str,
        path: str,
        query: str,
        endpoint: str,
        headers: list[tuple[str, str]],
        body: bytes,
        started_at: float,
        http_version: str = "1.1",
        peer: str = "",
    ) -> None:
        self.seq = seq
        self.http_version = http_version
        self.peer = peer
        self.method = method
        self.path = path
        self.query = query
        self.endpoint = endpoint
        self.headers = headers
        self.body = body
        self.started_at = started_at
        self.finished_at: float | None = None
        self.status: int | None = None
        self.stream = False
        self.client_disconnected = False
        self.disconnected_at: float | None = None
        self.behavior: Behavior | None = None

    def mark_disconnected(self) -> None:
        if not self.client_disconnected:
            self.client_disconnected = True
            self.disconnected_at = time.time()

    def to_json(self) -> dict[str, Any]:
        headers: dict[str, str] = {}
        for k, v in self.headers:
            k = k.lower()
            headers[k] = f"{headers[k]}, {v}" if k in headers else v
        body: Any = None
        raw: str | None = None
        if self.body:
            try:
                body = orjson.loads(self.body)
            except orjson.JSONDecodeError:
                raw = self.body.decode("utf-8", "replace")
        return {
            "seq": self.seq,
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "endpoint": self.endpoint,
            "headers": headers,
            "body": body,
            "raw_body": raw,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "status": self.status,
            "stream": self.stream,
            "http_version": self.http_version,
            "peer": self.peer,
            "client_disconnected": self.client_disconnected,
            "disconnected_at": self.disconnected_at,
            "behavior": self.behavior.to_json() if self.behavior else None,
        }


@dataclass(slots=True)
class Batch:
    """An Anthropic Message Batch: results are computed at creation, revealed after the delay."""

    id: str
    created_at: float
    ends_at: float
    results: list[tuple[str, dict[str, Any]]]  # (custom_id, result object)
    cancel_initiated_at: float | None = None


@dataclass(slots=True)
class EndpointState:
    name: str
    config: EndpointConfig
    queue: deque[Behavior] = field(default_factory=deque)
    records: deque[RequestRecord] = field(default_factory=lambda: deque(maxlen=RECORD_LIMIT))
    batches: dict[str, Batch] = field(default_factory=dict)
    window_start: float = 0.0
    used_requests: int = 0
    used_tokens: int = 0
    prompt_cache: dict[bytes, float] = field(default_factory=dict)  # prefix fingerprint -> expiry
    # Client connections that carried requests ("ip:port" peers), per HTTP version, since reset;
    # how tests and benches count the gateway's upstream connections.
    peers: dict[str, set[str]] = field(default_factory=dict)

    def next_behavior(self) -> Behavior | None:
        return self.queue.popleft() if self.queue else None

    def count_peer(self, http_version: str, peer: str) -> None:
        seen = self.peers.get(http_version)
        if seen is None:
            seen = self.peers[http_version] = set()
        seen.add(peer)

    def count_request(self, now: float) -> None:
        # The window opens at the first request after the last one closed, so a test always sees
        # about a minute until the reset (a wall-clock minute made tests flaky near its end).
        if now - self.window_start >= 60.0:
            self.window_start = now
            self.used_requests = 0
            self.used_tokens = 0
        self.used_requests += 1

    def ratelimit(self, now: float) -> tuple[int, int, int, int, float]:
        """(limit_req, remaining_req, limit_tok, remaining_tok, seconds until the window resets)."""
        cfg = self.config
        rem_req = cfg.ratelimit_remaining_requests
        if rem_req is None:
            rem_req = max(cfg.ratelimit_requests - self.used_requests, 0)
        rem_tok = cfg.ratelimit_remaining_tokens
        if rem_tok is None:
            rem_tok = max(cfg.ratelimit_tokens - self.used_tokens, 0)
        reset = max(self.window_start + 60.0 - now, 0.0)
        return cfg.ratelimit_requests, rem_req, cfg.ratelimit_tokens, rem_tok, reset


class FakeState:
    """All mutable state of one fake-upstream worker."""

    def __init__(self, defaults: EndpointConfig | None = None) -> None:
        self.defaults = defaults or EndpointConfig()
        self.endpoints: dict[str, EndpointState] = {}
        self.seq = 0
        self.version = 0  # bumped on every config change (invalidates response templates)

    def endpoint(self, name: str) -> EndpointState:
        ep = self.endpoints.get(name)
        if ep is None:
            ep = self.endpoints[name] = EndpointState(name, self.defaults.copy())
        return ep

    def configure(self, data: Any) -> EndpointState:
        if not isinstance(data, dict):
            raise ControlError("expected a JSON object")
        data = dict(data)
        name = data.pop("endpoint", "default")
        if not isinstance(name, str) or not name:
            raise ControlError("endpoint: expected a non-empty string")
        ep = self.endpoint(name)
        candidate = ep.config.copy()
        candidate.update(data)
        ep.config = candidate
        self.version += 1
        return ep

    def enqueue(self, data: Any) -> EndpointState:
        if not isinstance(data, dict):
            raise ControlError("expected a JSON object")
        name = data.get("endpoint", "default")
        if not isinstance(name, str) or not name:
            raise ControlError("endpoint: expected a non-empty string")
        items = data.get("behaviors")
        if not isinstance(items, list):
            raise ControlError("behaviors: expected a list")
        unknown = set(data) - {"endpoint", "behaviors"}
        if unknown:
            raise ControlError(f"{sorted(unknown)[0]}: unknown field")
        parsed = [Behavior.parse(item) for item in items]
        ep = self.endpoint(name)
        for behavior, count in parsed:
            ep.queue.extend(dataclasses.replace(behavior) for _ in range(count))
        self.version += 1
        return ep

    def reset(self, name: str | None = None) -> None:
        if name is None:
            self.endpoints.clear()
        else:
            self.endpoints.pop(name, None)
        self.version += 1

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq
