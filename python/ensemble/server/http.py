"""One HTTP exchange over RSGI: headers, a size-bounded body, and the ways to answer."""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Sequence
from typing import Any, Literal

from granian._granian import RSGIHTTPProtocol as HTTPProtocol
from granian._granian import RSGIProtocolClosed as ProtocolClosed
from granian._granian import RSGIProtocolError as ProtocolError
from granian.rsgi import Scope

from ensemble.errors import EnsembleError, InvalidRequest, RequestTooLarge

Family = Literal["native", "openai", "anthropic", "gemini", "admin"]
Headers = list[tuple[str, str]]

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


def new_request_id() -> str:
    return "req_" + secrets.token_hex(12)


class ClientDisconnected(EnsembleError):
    """The client went away while we were answering (logged as 499, never sent)."""

    status = 499
    type = "client_disconnected"
    code = "client_disconnected"


class StreamSink:
    """The body of a streamed response; a failed send means the client is gone."""

    __slots__ = ("_transport", "bytes_sent")

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self.bytes_sent = 0

    async def send(self, data: bytes) -> None:
        try:
            await self._transport.send_bytes(data)
        except (ProtocolClosed, ProtocolError, ConnectionError, RuntimeError) as e:
            raise ClientDisconnected("the client closed the connection") from e
        self.bytes_sent += len(data)


class Request:
    __slots__ = (
        "call",
        "family",
        "params",
        "proto",
        "request_id",
        "responded",
        "scope",
        "started",
        "status",
    )

    def __init__(self, scope: Scope, proto: HTTPProtocol) -> None:
        self.scope = scope
        self.proto = proto
        self.started = time.perf_counter()
        self.family: Family = "native"
        self.params: dict[str, str] = {}
        self.responded = False
        self.status = 0
        self.call: Any = None  # the gateway's CallContext once an inference handler made one (telemetry)
        supplied = scope.headers.get("x-request-id")
        if supplied is None:
            self.request_id = new_request_id()
        elif _REQUEST_ID.fullmatch(supplied):
            self.request_id = supplied
        else:
            self.request_id = new_request_id()
            raise InvalidRequest(
                "X-Request-ID: must be 1-128 characters of letters, digits and . _ : -",
                code="invalid_request_id",
            )

    @property
    def method(self) -> str:
        return self.scope.method

    @property
    def path(self) -> str:
        return self.scope.path

    def header(self, name: str) -> str | None:
        value: str | None = self.scope.headers.get(name)
        return value

    @property
    def headers(self) -> Any:
        return self.scope.headers

    async def body(self, limit: int) -> bytes:
        """The whole request body, refusing (413) anything over `limit` bytes before reading it all."""
        length = self.header("content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                raise InvalidRequest("Content-Length: not a number", code="invalid_content_length") from None
            if declared > limit:
                raise RequestTooLarge(f"request body is {declared} bytes; the limit is {limit}")
            return await self.proto()
        chunks: list[bytes] = []
        size = 0
        async for chunk in self.proto:
            size += len(chunk)
            if size > limit:
                raise RequestTooLarge(f"request body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def _headers(self, content_type: str, extra: Sequence[tuple[str, str]]) -> Headers:
        return [("content-type", content_type), ("x-request-id", self.request_id), *extra]

    def send(
        self,
        status: int,
        body: bytes,
        content_type: str = "application/json",
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.responded = True
        self.status = status
        self.proto.response_bytes(status, self._headers(content_type, headers), body)

    def start_stream(
        self, content_type: str, headers: Sequence[tuple[str, str]] = (), status: int = 200
    ) -> StreamSink:
        self.responded = True
        self.status = status
        extra = [("cache-control", "no-cache"), ("x-accel-buffering", "no"), *headers]
        return StreamSink(self.proto.response_stream(status, self._headers(content_type, extra)))
