"""A fake RSGI scope and protocol, to drive `App.handle` in process without a socket or Granian.

Used by the in-process benchmarks (pipeline, telemetry): they measure Ensemble's own Python cost,
with the server loop and the network taken away.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any


class Headers(dict[str, str]):
    """RSGI headers are looked up with `.get(name)`, lowercase names."""


class Scope:
    proto = "http"
    method = "POST"
    query_string = ""

    def __init__(self, path: str, headers: dict[str, str]) -> None:
        self.path = path
        self.headers = Headers(headers)


class _Done:
    """What Granian's `send_bytes` returns: an awaitable that is already finished."""

    def __await__(self) -> Iterator[None]:
        return iter(())


_DONE = _Done()


class Transport:
    def send_bytes(self, data: bytes) -> _Done:
        return _DONE


class Proto:
    """Hands over a fixed body and remembers the status; the client never disconnects."""

    __slots__ = ("body", "status")

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.status = 0

    async def __call__(self) -> bytes:
        return self.body

    async def client_disconnect(self) -> None:
        await asyncio.Event().wait()  # never: a benchmark client stays

    def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status = status

    def response_stream(self, status: int, headers: list[tuple[str, str]]) -> Any:
        self.status = status
        return Transport()
