"""`GET /api/v1/ws`: many native requests multiplexed on one WebSocket (see the README's routes).

    client: {"type": "auth", "api_key": "ens_…"}          server: {"type": "ready"}
    client: {"type": "request", "request_id": "r1", …native request fields…}
    server: {"type": "block", "request_id": "r1", "block": {…}}  (as tokens arrive)
            {"type": "done", "request_id": "r1", "response": {…InferenceResponse…}}
         or {"type": "error", "request_id": "r1", "error": {type, code, message, retryable}}
    client: {"type": "cancel", "request_id": "r1"}       → the upstream call is dropped at once

Each request runs in its own task, so a slow or stalled upstream never holds up the others. When the
socket closes, `server.on_client_disconnect` applies to the requests still running, as on HTTP.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import orjson

from ensemble import error_types
from ensemble.api import native
from ensemble.errors import AuthenticationFailed, EnsembleError, InvalidRequest, ProviderError
from ensemble.gateway import CallContext, LiveStream
from ensemble.server.granian_rsgi import ProtocolClosed, ProtocolError, WebsocketMessageType
from ensemble.server.http import ClientDisconnected
from ensemble.server.runtime import Runtime
from ensemble.storage.keys import KeyRecord

log = logging.getLogger("ensemble.server")

PATH = "/api/v1/ws"
AUTH_TIMEOUT = 10.0  # seconds a new socket has to authenticate
MAX_IN_FLIGHT = 256  # concurrent requests per socket
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
_CLOSE_NORMAL = 1000
_CLOSE_POLICY = 1008


def _error(request_id: str | None, error: EnsembleError) -> dict[str, Any]:
    kind, status = error_types.resolve(error)
    retryable = (isinstance(error, ProviderError) and error.retryable) or status in (429, 503, 504)
    return {
        "type": "error",
        "request_id": request_id,
        "error": {"type": kind, "code": error.code, "message": error.message, "retryable": retryable},
    }


class Session:
    def __init__(self, rt: Runtime, transport: Any) -> None:
        self.rt = rt
        self.transport = transport
        self.key: KeyRecord | None = None
        self.closed = False
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.cancelled: set[str] = set()

    async def send(self, message: dict[str, Any] | bytes) -> None:
        if self.closed:
            return
        data = message if isinstance(message, bytes) else orjson.dumps(message)
        try:
            await self.transport.send_str(data.decode())
        except (ProtocolClosed, ProtocolError, ConnectionError, RuntimeError):
            self.closed = True

    async def receive(self) -> dict[str, Any] | None:
        """The next JSON object; None when the socket closed. Raises InvalidRequest on garbage."""
        msg = await self.transport.receive()
        if msg.kind == WebsocketMessageType.close:
            self.closed = True
            return None
        try:
            data = orjson.loads(msg.data)
        except orjson.JSONDecodeError:
            raise InvalidRequest("message: not valid JSON", code="invalid_json") from None
        if not isinstance(data, dict):
            raise InvalidRequest("message: expected a JSON object", code="invalid_json")
        return data

    async def authenticate(self) -> bool:
        try:
            async with asyncio.timeout(AUTH_TIMEOUT):
                data = await self.receive()
            if data is None:
                return False
            if data.get("type") != "auth" or not isinstance(data.get("api_key"), str):
                raise AuthenticationFailed(
                    'the first message must be {"type": "auth", "api_key": "ens_…"}', code="auth_required"
                )
            self.key = self.rt.auth.authenticate(data["api_key"])
        except TimeoutError:
            await self.send(
                _error(None, AuthenticationFailed("no auth message in time", code="auth_timeout"))
            )
            return False
        except EnsembleError as e:
            await self.send(_error(None, e))
            return False
        await self.send({"type": "ready"})
        return True

    async def serve(self) -> None:
        while not self.closed:
            data: dict[str, Any] | None = None  # bound before receive(), which raises on garbage
            try:
                data = await self.receive()
                if data is None:
                    break
                self.dispatch(data)
            except EnsembleError as e:
                rid = data.get("request_id") if isinstance(data, dict) else None
                await self.send(_error(rid if isinstance(rid, str) else None, e))

    def dispatch(self, data: dict[str, Any]) -> None:
        kind = data.pop("type", None)
        request_id = data.pop("request_id", None)
        if kind not in ("request", "cancel"):
            raise InvalidRequest('type: expected "request" or "cancel"', param="type")
        if not isinstance(request_id, str) or not _REQUEST_ID.fullmatch(request_id):
            raise InvalidRequest(
                "request_id: required, 1-128 characters of letters, digits and . _ : -", param="request_id"
            )
        if kind == "cancel":
            task = self.tasks.get(request_id)
            if task is None:
                raise InvalidRequest(f"request_id: no request {request_id!r} is running", param="request_id")
            self.cancelled.add(request_id)
            task.cancel()
            return
        if request_id in self.tasks:
            raise InvalidRequest(f"request_id: {request_id!r} is already running", param="request_id")
        if len(self.tasks) >= MAX_IN_FLIGHT:
            raise InvalidRequest(f"at most {MAX_IN_FLIGHT} requests may run at once on one socket")
        request = native.parse_fields(data)
        request.stream = True
        task = asyncio.get_running_loop().create_task(self.run(request_id, request), name=f"ws-{request_id}")
        self.tasks[request_id] = task
        # Shutdown waits for these like for answers completing for gone HTTP clients.
        self.rt.background.add(task)
        task.add_done_callback(self.rt.background.discard)

    async def run(self, request_id: str, request: Any) -> None:
        rt = self.rt
        assert rt.gateway is not None and self.key is not None
        ctx = CallContext(request_id, self.key)
        rt.inflight.add(request_id, self.key.key_id, request.model)
        stream: LiveStream | None = None
        prefix = b'{"type":"block","request_id":' + orjson.dumps(request_id) + b',"block":'
        try:
            try:
                stream = await rt.gateway.open_stream(request, ctx)
            except EnsembleError as e:
                rt.gateway.record(ctx, request.model, e.status, error=e.message)
                await self.send(_error(request_id, e))
                return
            rt.inflight.streaming(request_id, stream.target.provider.name)
            while (delta := await stream.next()) is not None:
                payload = native.block_payload(delta)
                if payload is not None and not self.closed:
                    await self.send(prefix + orjson.dumps(payload) + b"}")
            response = stream.response()
            await self.send(
                b'{"type":"done","request_id":'
                + orjson.dumps(request_id)
                + b',"response":'
                + native.render_response(response)
                + b"}"
            )
        except EnsembleError as e:
            if stream is not None:
                await stream.aclose()
                stream.fail(e)
            await self.send(_error(request_id, e))
        except asyncio.CancelledError:
            by_client = request_id in self.cancelled or self.closed
            gone = ClientDisconnected(
                "the request was cancelled by the client" if by_client else "the gateway shut down",
                code="cancelled" if by_client else "shutdown",
            )
            if stream is not None:
                await stream.aclose()
                stream.fail(gone)
            else:
                rt.gateway.record(ctx, request.model, gone.status, error=gone.message)
            await self.send(_error(request_id, gone))
            if not by_client:
                raise
        except Exception:
            log.exception("websocket request %s failed unexpectedly", request_id)
            error = ProviderError("internal error while streaming", code="internal_error")
            if stream is not None:
                await stream.aclose()
                stream.fail(error)
            await self.send(_error(request_id, error))
        finally:
            self.tasks.pop(request_id, None)
            self.cancelled.discard(request_id)
            if not ctx.recorded:
                rt.inflight.discard(request_id)

    def socket_closed(self) -> None:
        """Apply `on_client_disconnect` to requests still running on a closed socket."""
        self.closed = True
        if self.rt.config.server.on_client_disconnect == "cancel":
            for task in list(self.tasks.values()):
                task.cancel()


async def handle(rt: Runtime, scope: Any, proto: Any) -> None:
    if scope.path != PATH:
        proto.close(_CLOSE_POLICY)
        return
    transport = await proto.accept()
    session = Session(rt, transport)
    code = _CLOSE_NORMAL
    try:
        if await session.authenticate():
            await session.serve()
        else:
            code = _CLOSE_POLICY  # not authenticated: the policy-violation close code
    except (ProtocolClosed, ProtocolError, ConnectionError):
        pass
    finally:
        session.socket_closed()
        proto.close(code)
