"""Reply types, SSE framing and the provider-format interface used by ``app``.

Providers are pure renderers: they turn a parsed request into a ``Reply`` (one JSON/JSONL body)
or a ``StreamReply`` (a list of events); ``app`` owns all I/O (latency, behaviours, framing,
byte splitting, disconnect detection, recording).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from .behavior import Behavior, EndpointConfig, EndpointState
from .content import new_id

Headers = list[tuple[str, str]]
# An event: SSE lines without terminators, or (for non-SSE streams) one raw byte string.
Event = tuple[bytes, ...]

ID_MARK = "@@fake-id@@"  # in JSON bodies: replaced by a fresh id on every send
TS_MARK = "@@fake-ts@@"  # in JSON bodies: the quoted marker is replaced by the unix time

JSON_CT = ("content-type", "application/json")
SSE_CT = ("content-type", "text/event-stream; charset=utf-8")
NDJSON_CT = ("content-type", "application/x-ndjson")


class HeaderView(Protocol):
    def get(self, key: str, default: Any = None) -> Any: ...
    def __contains__(self, key: str) -> bool: ...


Template = list[list[bytes]]


def compile_template(data: bytes) -> Template:
    """Split on the markers once, so filling in ids is two C-level joins (no per-byte scanning)."""
    return [seg.split(b"@@fake-id@@") for seg in data.split(b'"@@fake-ts@@"')]


def fill_template(template: Template, rid: bytes, ts: bytes) -> bytes:
    return ts.join([rid.join(parts) for parts in template])


def _stamp(prefix: str) -> tuple[bytes, bytes]:
    return new_id(prefix).encode(), str(int(time.time())).encode()


@dataclass(slots=True)
class Reply:
    """A complete response body. ``id_prefix`` set → the body holds ID_MARK/TS_MARK markers."""

    status: int
    body: bytes
    headers: Headers
    tokens: int = 0
    id_prefix: str | None = None
    cacheable: bool = False
    template: Template | None = None

    def render(self) -> bytes:
        if self.id_prefix is None:
            return self.body
        if self.template is None:
            self.template = compile_template(self.body)
        return fill_template(self.template, *_stamp(self.id_prefix))


@dataclass(slots=True)
class StreamReply:
    """Events of one stream. ``id_prefix`` set → events hold ID_MARK/TS_MARK (one id per stream)."""

    headers: Headers
    events: list[Event]
    error_event: Event
    sse: bool = True
    tokens: int = 0
    trailer: bytes = b""  # non-SSE streams: written after the last event (e.g. "]")
    id_prefix: str | None = None
    cacheable: bool = False
    template: Template | None = None  # all events framed and compiled, kept for cached replies

    def filler(self) -> Callable[[bytes], bytes]:
        """Fills markers in individually framed events, with one id for the whole stream."""
        if self.id_prefix is None:
            return lambda data: data
        rid, ts = _stamp(self.id_prefix)
        return lambda data: fill_template(compile_template(data), rid, ts)

    def render_all(self, framing: str, comments: bool) -> bytes:
        """Every event framed, ids filled in (the compiled template is kept when cacheable)."""
        template = self.template
        if template is None:
            template = compile_template(self.frame_all(framing, comments))
            if self.cacheable:
                self.template = template
        if self.id_prefix is None:
            return b"".join(template[0])
        return fill_template(template, *_stamp(self.id_prefix))

    def frame_all(self, framing: str, comments: bool) -> bytes:
        if not self.sse:
            return b"".join([b"".join(ev) for ev in self.events] + [self.trailer])
        framer = Framer(framing, comments)
        return b"".join([framer.frame(ev) for ev in self.events])


@dataclass(slots=True)
class Ctx:
    """Everything a provider needs to answer one request."""

    method: str
    action: str
    arg: str  # model name (Gemini) or batch id (Anthropic), else ""
    query: str
    body: bytes
    headers: HeaderView
    endpoint: EndpointState
    config: EndpointConfig
    base_url: str  # scheme://host[/endpoint-prefix], for URLs the API hands out
    behavior: Behavior | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Provider(Protocol):
    name: str
    default_framing: str

    def api_key(self, headers: HeaderView, query: str) -> str | None: ...

    def precheck(self, ctx: Ctx) -> Reply | None: ...

    def error(self, status: int, message: str | None = None, retry_after: float | None = None) -> Reply: ...

    def handle(self, ctx: Ctx) -> Reply | StreamReply: ...

    def ratelimit_headers(self, ep: EndpointState, now: float, status: int) -> Headers: ...


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


def json_reply(status: int, obj: Any, headers: Headers | None = None, **kw: Any) -> Reply:
    return Reply(status, orjson.dumps(obj), [JSON_CT, *(headers or [])], **kw)


def error_reply(status: int, body: Any, retry_after: float | None = None) -> Reply:
    """A JSON error, with `retry-after` when the scenario names one (OpenAI and Anthropic send it)."""
    headers: Headers = [] if retry_after is None else [("retry-after", f"{retry_after:g}")]
    return json_reply(status, body, headers)


def bearer_token(headers: HeaderView) -> str | None:
    auth = headers.get("authorization")
    if isinstance(auth, str) and auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return None


def sse(data: Any, event: str | None = None) -> Event:
    payload = b"data: " + orjson.dumps(data)
    if event is None:
        return (payload,)
    return (b"event: " + event.encode(), payload)


_TERMS: dict[str, tuple[bytes, ...]] = {
    "lf": (b"\n",),
    "crlf": (b"\r\n",),
    "cr": (b"\r",),
    "mixed": (b"\n", b"\r\n", b"\r"),
}


class Framer:
    """Line terminators for SSE. ``mixed`` rotates LF/CRLF/CR but never puts LF right after a
    lone CR (that pair would read as one CRLF terminator and swallow an event boundary).
    ``ndjson`` is no SSE at all: each event's data on a line of its own (event names and the
    ``[DONE]`` sentinel dropped, as newline-delimited JSON APIs do)."""

    __slots__ = ("comments", "count", "i", "ndjson", "prev_cr", "terms")

    def __init__(self, framing: str, comments: bool) -> None:
        self.ndjson = framing == "ndjson"
        self.terms = _TERMS["lf" if self.ndjson else framing]
        self.i = 0
        self.prev_cr = False
        self.comments = comments
        self.count = 0

    def term(self) -> bytes:
        terms = self.terms
        if len(terms) == 1:
            return terms[0]
        t = terms[self.i % len(terms)]
        self.i += 1
        if self.prev_cr and t == b"\n":
            t = b"\r\n"
        self.prev_cr = t == b"\r"
        return t

    def frame(self, lines: Event) -> bytes:
        if self.ndjson:
            data = [line[6:] for line in lines if line.startswith(b"data: ") and line != b"data: [DONE]"]
            return b"".join(d + b"\n" for d in data)
        out: list[bytes] = []
        if self.comments:
            if self.count % 2 == 0:  # a comment-only block between events
                out += (b": keepalive", self.term(), self.term())
            else:  # a comment line inside the event
                out += (b": keepalive", self.term())
        self.count += 1
        for line in lines:
            out += (line, self.term())
        out.append(self.term())
        return b"".join(out)


def split_bytes(data: bytes, size: int) -> list[bytes]:
    if size <= 0 or len(data) <= size:
        return [data]
    return [data[i : i + size] for i in range(0, len(data), size)]
