"""The RSGI application: routing, control API, recording and all response I/O.

Paths: any leading segments before ``/v1/`` (or ``/v1beta/``) name a virtual endpoint
(``/ep-a/v1/chat/completions`` → ``ep-a``; none → ``default``). Control API under ``/_fake/``.

Connection tricks (Granian gives RSGI apps no socket handle; raising or returning early from the
handler just ends the response cleanly, or yields a 500): the worker finds the connection's file
descriptor in ``/proc/self/fd`` by matching the peer address with ``scope.client``, then

* ``close_connection``: ``shutdown(SHUT_RDWR)`` before any response byte → the client sees the
  server close the connection without a response (curl: "Empty reply from server").
* ``reset_after_chunks``: ``SO_LINGER {1, 0}`` on a dup of the socket, ``dup2(/dev/null)`` over
  Granian's descriptor, close the dup → the kernel sends a TCP RST (client: ECONNRESET). Granian's
  connection task is left holding /dev/null (one leaked fd per reset; fine for a test fake).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import socket
import struct
import termios
import time
from collections.abc import Callable
from typing import Any, NamedTuple
from urllib.parse import parse_qs

import orjson

from . import anthropic, gemini, openai
from .behavior import Behavior, ControlError, EndpointConfig, FakeState, RequestRecord
from .wire import (
    JSON_CT,
    NDJSON_CT,
    SSE_CT,
    Ctx,
    Event,
    Framer,
    Provider,
    Reply,
    StreamReply,
    json_reply,
    split_bytes,
)

OPENAI: Provider = openai.PROVIDER
ANTHROPIC: Provider = anthropic.PROVIDER
GEMINI: Provider = gemini.PROVIDER

_VERSIONS = frozenset(("v1", "v1beta", "v1alpha"))
_CACHE_LIMIT = 4096  # route and response-template cache entries (cleared when full)
_CACHE_MAX_BODY = 64 * 1024  # larger request bodies are answered without caching
_MALFORMED_SSE = (b'data: {"malformed": tru',)
_MALFORMED_RAW = b',{"malformed": tru'


class Route(NamedTuple):
    endpoint: str
    provider: Provider | None  # None: decided per request (GET /v1/models is OpenAI and Anthropic)
    action: str  # control:<name> | chat | models | messages | count_tokens | batch_* | generate | ...
    arg: str
    prefix: str  # path prefix before /v1…, for URLs handed out (batch results_url)
    cacheable: bool


def resolve(method: str, path: str) -> Route:
    if path.startswith("/_fake/"):
        return Route("", None, "control:" + path[7:].strip("/"), "", "", False)
    segs = path.split("/")
    idx = next((i for i, s in enumerate(segs) if s in _VERSIONS and i > 0), -1)
    if idx < 0:
        return Route("default", OPENAI, "not_found", "", "", False)
    endpoint = "/".join(s for s in segs[1:idx] if s) or "default"
    prefix = "/".join(segs[:idx])
    rest = [s for s in segs[idx + 1 :]]
    version = segs[idx]

    def r(
        provider: Provider | None, action: str, arg: str = "", want: str = "POST", cache: bool = False
    ) -> Route:
        if method != want:
            action = "not_found"
        return Route(endpoint, provider, action, arg, prefix, cache and action != "not_found")

    if rest and rest[0] in ("models", "tunedModels") and len(rest) >= 2 and ":" in rest[-1]:
        model, _, verb = "/".join(rest[1:]).rpartition(":")
        if verb == "generateContent":
            return r(GEMINI, "generate", model, cache=True)
        if verb == "streamGenerateContent":
            return r(GEMINI, "stream", model, cache=True)
        if verb == "countTokens":
            return r(GEMINI, "count_tokens", model, cache=True)
        if verb in ("embedContent", "batchEmbedContents"):
            return r(GEMINI, "embed" if verb == "embedContent" else "batch_embed", model, cache=True)
        return r(GEMINI, "not_found", model)
    if rest == ["chat", "completions"]:
        return r(OPENAI, "chat", cache=True)
    if rest == ["responses"]:
        return r(OPENAI, "responses", cache=True)
    if rest == ["embeddings"]:
        return r(OPENAI, "embeddings", cache=True)
    if rest == ["models"]:
        return r(GEMINI if version == "v1beta" else None, "models", want="GET")
    if rest and rest[0] == "messages":
        n = len(rest)
        if n == 1:
            return r(ANTHROPIC, "messages", cache=True)
        if rest[1] == "count_tokens" and n == 2:
            return r(ANTHROPIC, "count_tokens", cache=True)
        if rest[1] == "batches":
            if n == 2:
                return r(ANTHROPIC, "batch_create" if method == "POST" else "batch_list", want=method)
            if n == 3 and method in ("GET", "DELETE"):
                return r(ANTHROPIC, "batch_get" if method == "GET" else "batch_delete", rest[2], want=method)
            if n == 4 and rest[3] == "results":
                return r(ANTHROPIC, "batch_results", rest[2], want="GET")
            if n == 4 and rest[3] == "cancel":
                return r(ANTHROPIC, "batch_cancel", rest[2])
        return r(ANTHROPIC, "not_found")
    return Route(endpoint, GEMINI if version == "v1beta" else None, "not_found", "", prefix, False)


def _replayed(reply: Reply | StreamReply, beh: Behavior) -> Reply | StreamReply:
    """The behaviour's recorded answer in place of the generated one, when it has one of this kind."""
    if isinstance(reply, StreamReply) and beh.stream_body is not None:
        events: list[Event] = [(write.encode(),) for write in beh.stream_body]
        return StreamReply(reply.headers, events, reply.error_event, sse=False)
    if isinstance(reply, Reply) and beh.replay_json is not None:
        return json_reply(200, beh.replay_json)
    return reply


def _find_socket(client: str) -> tuple[int, socket.socket] | None:
    """Locate the accepted connection whose peer is ``client`` ("ip:port") among our fds."""
    host, _, port_s = client.rpartition(":")
    host = host.strip("[]")
    try:
        port = int(port_s)
    except ValueError:
        return None
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            sock = socket.socket(fileno=os.dup(fd))
        except OSError:
            continue
        try:
            if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM:
                peer = sock.getpeername()
                if peer[1] == port and peer[0] in (host, "::ffff:" + host):
                    return fd, sock
        except OSError:
            pass
        sock.close()
    return None


def close_connection(client: str) -> bool:
    found = _find_socket(client)
    if found is None:
        return False
    _, sock = found
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
    return True


async def reset_connection(client: str, grace: float = 0.05) -> bool:
    """RST the connection after letting what was already sent reach (and be read by) the client:
    a RST makes the peer's kernel drop unread data, so wait until our send queue drained, then
    ``grace`` seconds more."""
    found = _find_socket(client)
    if found is None:
        return False
    fd, sock = found
    for _ in range(100):
        if fcntl.ioctl(fd, termios.TIOCOUTQ, b"\0\0\0\0") == b"\0\0\0\0":
            break
        await asyncio.sleep(0.005)
    await asyncio.sleep(grace)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    null = os.open(os.devnull, os.O_RDWR)
    try:
        os.dup2(null, fd)
    finally:
        os.close(null)
    sock.close()  # last reference to the TCP socket, linger 0 → RST
    return True


class _Watch:
    """Watches ``proto.client_disconnect()`` while a response is being produced."""

    __slots__ = ("done", "rec", "task")

    def __init__(self, proto: Any, rec: RequestRecord | None) -> None:
        self.rec = rec
        self.done = False
        self.task: asyncio.Future[Any] = asyncio.ensure_future(proto.client_disconnect())
        self.task.add_done_callback(self._fired)

    def _fired(self, _: object) -> None:
        if not self.done and self.rec is not None:
            self.rec.mark_disconnected()

    @property
    def disconnected(self) -> bool:
        gone = self.task.done() and not self.task.cancelled()
        if gone and self.rec is not None:
            self.rec.mark_disconnected()
        return gone

    async def sleep(self, seconds: float) -> bool:
        """Sleep; return False early if the client went away."""
        if seconds > 0 and not self.task.done():
            await asyncio.wait((self.task,), timeout=seconds)
        return not self.disconnected

    def finish(self) -> None:
        self.done = True
        # Break the task -> callback -> watch -> task cycle before cancelling: left in place, a
        # task wrapping Granian's client_disconnect() awaitable is never reclaimed (~1.2 KB per
        # request retained for as long as the worker lives).
        self.task.remove_done_callback(self._fired)
        if not self.task.done():
            self.task.cancel()


class FakeUpstream:
    """The RSGI application object (``__rsgi__``)."""

    def __init__(self, defaults: EndpointConfig | None = None) -> None:
        self.state = FakeState(defaults)
        self._routes: dict[tuple[str, str], Route] = {}
        self._cache: dict[tuple[str, str, str, bytes], tuple[int, Reply | StreamReply]] = {}

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        await self(scope, proto)

    async def __call__(self, scope: Any, proto: Any) -> None:
        method: str = scope.method
        path: str = scope.path
        key = (method, path)
        route = self._routes.get(key)
        if route is None:
            route = resolve(method, path)
            if len(self._routes) > _CACHE_LIMIT:
                self._routes.clear()
            self._routes[key] = route
        if route.action.startswith("control:"):
            await self._control(scope, proto, route.action[8:])
            return
        body: bytes = await proto()
        state = self.state
        ep = state.endpoint(route.endpoint)
        cfg = ep.config
        now = time.time()
        provider = route.provider
        if provider is None:
            provider = ANTHROPIC if "anthropic-version" in scope.headers else OPENAI
        rec: RequestRecord | None = None
        if cfg.record:
            rec = RequestRecord(
                state.next_seq(),
                method,
                path,
                scope.query_string,
                route.endpoint,
                scope.headers.items(),
                body,
                now,
                scope.http_version,
                scope.client,
            )
            ep.records.append(rec)
        ep.count_request(now)
        ep.count_peer(scope.http_version, scope.client)
        beh = ep.queue.popleft() if ep.queue else None
        if rec is not None:
            rec.behavior = beh
        ctx = Ctx(method, route.action, route.arg, scope.query_string, body, scope.headers, ep, cfg, "", beh)

        # Fast path: plain config, no behaviour, cacheable route → precomputed template.
        if beh is None and route.cacheable and cfg.is_plain:
            ckey = (route.endpoint, path, scope.query_string, body)
            reply: Reply | StreamReply | None = provider.precheck(ctx)  # header checks are never cached
            if reply is None:
                hit = self._cache.get(ckey)
                if hit is not None and hit[0] == state.version:
                    reply = hit[1]
                else:
                    reply = provider.handle(ctx)
                    if reply.cacheable and len(body) <= _CACHE_MAX_BODY:
                        if len(self._cache) > _CACHE_LIMIT:
                            self._cache.clear()
                        self._cache[ckey] = (state.version, reply)
            if isinstance(reply, Reply):
                ep.used_tokens += reply.tokens
                headers = reply.headers + provider.ratelimit_headers(ep, now, reply.status)
                proto.response_bytes(reply.status, headers, reply.render())
                if rec is not None:
                    rec.status = reply.status
                    rec.finished_at = time.time()
                return
            await self._send_stream(scope, proto, provider, ep.name, reply, 200, cfg, None, rec, now)
            return

        watch = _Watch(proto, rec) if (beh is not None or cfg.latency_ms) else None
        try:
            await self._respond(scope, proto, route, provider, ctx, beh, rec, watch, now)
        finally:
            if watch is not None:
                watch.finish()
            if rec is not None and rec.finished_at is None:
                rec.finished_at = time.time()

    async def _respond(
        self,
        scope: Any,
        proto: Any,
        route: Route,
        provider: Provider,
        ctx: Ctx,
        beh: Behavior | None,
        rec: RequestRecord | None,
        watch: _Watch | None,
        now: float,
    ) -> None:
        cfg = ctx.config
        ep = ctx.endpoint
        stall = beh.stall_before_first_byte_ms if beh is not None else 0.0
        if stall and watch is not None and not await watch.sleep(stall / 1000):
            return
        if beh is not None and beh.close_connection:
            close_connection(scope.client)
            if rec is not None:
                rec.status = 0
            return
        host = scope.headers.get("host") or scope.authority or "localhost"
        ctx.base_url = f"{scope.scheme}://{host}{route.prefix}"
        ctx.extra["path"] = scope.path
        reply: Reply | StreamReply | None = provider.precheck(ctx)
        if reply is None and beh is not None and beh.status is not None:
            reply = provider.error(beh.status, beh.message, beh.retry_after)
        if reply is None:
            reply = provider.handle(ctx)
            if beh is not None:
                reply = _replayed(reply, beh)
        if cfg.latency_ms and watch is not None and not await watch.sleep(cfg.latency_ms / 1000):
            return
        if isinstance(reply, StreamReply):
            await self._send_stream(scope, proto, provider, ep.name, reply, 200, cfg, beh, rec, now, watch)
            return
        ep.used_tokens += reply.tokens
        if beh is not None and beh.mid_stream:
            body = reply.render()
            n = max(1, min(cfg.chunks, len(body)))
            size = -(-len(body) // n)
            pieces: list[Event] = [(body[i : i + size],) for i in range(0, len(body), size)]
            stream = StreamReply(reply.headers, pieces, (_MALFORMED_RAW,), sse=False)
            await self._send_stream(
                scope, proto, provider, ep.name, stream, reply.status, cfg, beh, rec, now, watch
            )
            return
        headers = reply.headers + provider.ratelimit_headers(ep, now, reply.status)
        proto.response_bytes(reply.status, headers, reply.render())
        if rec is not None:
            rec.status = reply.status

    async def _send_stream(
        self,
        scope: Any,
        proto: Any,
        provider: Provider,
        endpoint: str,
        reply: StreamReply,
        status: int,
        cfg: EndpointConfig,
        beh: Behavior | None,
        rec: RequestRecord | None,
        now: float,
        watch: _Watch | None = None,
    ) -> None:
        ep = self.state.endpoint(endpoint)
        ep.used_tokens += reply.tokens
        if rec is not None:
            rec.stream = True
            rec.status = status
        headers = reply.headers + provider.ratelimit_headers(ep, now, status)
        if cfg.framing == "ndjson" and reply.sse:
            headers = [NDJSON_CT if h == SSE_CT else h for h in headers]
        transport = proto.response_stream(status, headers)
        split = cfg.split_bytes
        gap = cfg.chunk_gap_ms / 1000

        async def send(data: bytes) -> bool:
            try:
                if split:
                    for i, piece in enumerate(split_bytes(data, split)):
                        if i:
                            await asyncio.sleep(0.001)  # so pieces reach the client in separate reads
                        await transport.send_bytes(piece)
                else:
                    await transport.send_bytes(data)
            except Exception:  # RSGIProtocolClosed: the client went away
                if rec is not None:
                    rec.mark_disconnected()
                return False
            return watch is None or not watch.disconnected

        if beh is None and not gap and not split:
            # Nothing to pace: write every event at once (same bytes, one send). Cached replies keep
            # the framed template, so repeated identical requests only substitute id and timestamp.
            await send(reply.render_all(cfg.framing or provider.default_framing, cfg.comments))
            if rec is not None:
                rec.finished_at = time.time()
            return

        framer = Framer(cfg.framing or provider.default_framing, cfg.comments) if reply.sse else None
        frame: Callable[[tuple[bytes, ...]], bytes] = (
            framer.frame if framer is not None else (lambda ev: b"".join(ev))
        )
        fill = reply.filler()
        own_watch = watch is None
        if watch is None:
            watch = _Watch(proto, rec)
        events = reply.events
        try:
            for i in range(len(events) + 1):
                if beh is not None:
                    if beh.stall_after_chunks == i and not await watch.sleep(beh.stall_ms / 1000):
                        return
                    if beh.reset_after_chunks == i:
                        await reset_connection(scope.client)
                        return
                    if beh.malformed_after_chunks == i:
                        await send(frame(_MALFORMED_SSE) if reply.sse else _MALFORMED_RAW)
                        return
                    if beh.error_event_after_chunks == i:
                        await send(frame(reply.error_event))
                        return
                if i == len(events):
                    break
                if i and gap and not await watch.sleep(gap):
                    return
                if not await send(fill(frame(events[i]))):
                    return
            if reply.trailer:
                await send(reply.trailer)
        finally:
            if own_watch:
                watch.finish()
            if rec is not None:
                rec.finished_at = time.time()

    # ---- control API -------------------------------------------------------------------------

    async def _control(self, scope: Any, proto: Any, name: str) -> None:
        body = await proto()
        method = scope.method
        query = parse_qs(scope.query_string)
        state = self.state
        try:
            data: Any = orjson.loads(body) if body.strip() else {}
        except orjson.JSONDecodeError:
            proto.response_bytes(400, [JSON_CT], b'{"error": "invalid JSON"}')
            return
        try:
            if name == "health" and method == "GET":
                reply = json_reply(200, {"status": "ok", "pid": os.getpid()})
            elif name == "config" and method in ("PUT", "POST"):
                ep = state.configure(data)
                reply = json_reply(200, {"endpoint": ep.name, "config": ep.config.to_json()})
            elif name == "config" and method == "GET":
                ep = state.endpoint(query.get("endpoint", ["default"])[0])
                reply = json_reply(
                    200,
                    {
                        "endpoint": ep.name,
                        "config": ep.config.to_json(),
                        "queued": [b.to_json() for b in ep.queue],
                    },
                )
            elif name == "connections" and method == "GET":
                ep = state.endpoint(query.get("endpoint", ["default"])[0])
                counts = {version: len(peers) for version, peers in ep.peers.items()}
                reply = json_reply(200, {"endpoint": ep.name, "connections": counts})
            elif name == "enqueue" and method == "POST":
                ep = state.enqueue(data)
                reply = json_reply(200, {"endpoint": ep.name, "queued": len(ep.queue)})
            elif name == "requests" and method == "GET":
                wanted = query.get("endpoint")
                eps = [state.endpoint(wanted[0])] if wanted else list(state.endpoints.values())
                raw_since = query.get("since", ["0"])[0]
                if not raw_since.isdigit():
                    raise ControlError("since: expected a sequence number")
                since = int(raw_since)  # only records after this seq
                records = sorted((r for e in eps for r in e.records if r.seq > since), key=lambda r: r.seq)
                reply = json_reply(200, {"requests": [r.to_json() for r in records]})
            elif name == "reset" and method == "POST":
                target = data.get("endpoint") if isinstance(data, dict) else None
                if target is not None and not isinstance(target, str):
                    raise ControlError("endpoint: expected a string")
                state.reset(target)
                self._cache.clear()
                reply = json_reply(200, {"reset": target or "all"})
            else:
                reply = json_reply(404, {"error": f"no control route {method} /_fake/{name}"})
        except ControlError as exc:
            reply = json_reply(400, {"error": str(exc)})
        proto.response_bytes(reply.status, reply.headers, reply.body)


def create_app(defaults: EndpointConfig | None = None) -> FakeUpstream:
    return FakeUpstream(defaults)


def app_from_env() -> FakeUpstream:
    """Granian factory target: defaults come from ``ENSEMBLE_FAKE_DEFAULTS`` (JSON config)."""
    defaults = EndpointConfig()
    raw = os.environ.get("ENSEMBLE_FAKE_DEFAULTS")
    if raw:
        defaults.update(orjson.loads(raw))
    return FakeUpstream(defaults)
