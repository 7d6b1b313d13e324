"""The response half both clients share: a body buffered as it arrives, read with stall and overall
timeouts, and hooks for what each transport does when the consumer takes bytes, finishes or aborts.

HTTP/1.1 (http1.py) pauses and resumes its socket around a high-water mark; HTTP/2 (http2.py)
gives flow-control credit back as bytes are taken. Either way the provider sends no faster than the
consumer reads.
"""

from __future__ import annotations

import asyncio
import collections
import copy
import time
from collections.abc import AsyncIterator

from ensemble.errors import UpstreamTimeout


class _Expired(Exception):
    """What a wait's timer puts into the future it bounds."""


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(_Expired())


class BufferedResponse:
    """What the caller sees as UpstreamResponse; the transport feeds it."""

    __slots__ = (
        "_buffered",
        "_chunks",
        "_deadline",
        "_done",
        "_error",
        "_headers_ready",
        "_read_timeout",
        "_waiter",
        "headers",
        "status",
    )

    def __init__(self, read_timeout: float | None, deadline: float | None) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self._headers_ready = asyncio.get_running_loop().create_future()
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        self._done = False
        self._error: BaseException | None = None
        self._read_timeout = read_timeout
        self._deadline = deadline

    # -- transport hooks ---------------------------------------------------------------------

    def _abort(self) -> None:
        """Drop the exchange so the provider stops generating for nobody."""
        raise NotImplementedError

    def _took(self, n: int, buffered: int) -> None:
        """The consumer took `n` bytes; `buffered` are still unread."""

    def _finished(self) -> None:
        """The body was read to its end."""

    # -- fed by the transport ----------------------------------------------------------------

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        self._wake()

    def headers_complete(self, status: int) -> None:
        self.status = status
        if not self._headers_ready.done():
            self._headers_ready.set_result(None)

    def complete(self) -> None:
        self._done = True
        self._wake()

    def fail(self, error: BaseException) -> None:
        if self._done:
            return
        self._error = error
        if not self._headers_ready.done():
            self._headers_ready.set_exception(error)
        self._wake()

    # -- used by the caller ------------------------------------------------------------------

    def _timeout(self) -> float | None:
        """None: no timer here (a stream: the caller's StallWatchdog bounds the waits)."""
        if self._deadline is None:
            return self._read_timeout
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise UpstreamTimeout(
                "the provider call exceeded its overall time limit", retryable=True, code="overall_timeout"
            )
        return left if self._read_timeout is None else min(self._read_timeout, left)

    def _bound(self, waiter: asyncio.Future[None]) -> asyncio.TimerHandle | None:
        """A timer that fails `waiter` when the read or overall timeout is up (None: no bound).
        One timer handle per wait: `asyncio.wait_for` (and the `shield` it needs for a future
        others also wait on) builds a task-like chain of futures and callbacks each time."""
        timeout = self._timeout()
        if timeout is None:
            return None
        return asyncio.get_running_loop().call_later(timeout, _expire, waiter)

    async def wait_headers(self) -> None:
        ready = self._headers_ready
        timer = None if ready.done() else self._bound(ready)
        try:
            await ready
        except _Expired:
            self._abort()
            raise UpstreamTimeout("the provider did not answer in time", retryable=True) from None
        finally:
            if timer is not None:
                timer.cancel()

    async def _next(self) -> bytes | None:
        while True:
            if self._chunks:
                data = self._chunks.popleft()
                self._buffered -= len(data)
                self._took(len(data), self._buffered)
                return data
            if self._done:
                return None
            if self._error is not None:
                # A copy: raising the stored instance would chain its traceback (and through it the
                # request's frames and RSGI transport) to this response, a cycle only the GC breaks;
                # Granian ends a client's stream only when its transport is freed.
                raise copy.copy(self._error)
            self._waiter = waiter = asyncio.get_running_loop().create_future()
            timer = self._bound(waiter)  # None for a stream: the caller's watchdog bounds the wait
            try:
                await waiter
            except _Expired:
                self._abort()
                raise UpstreamTimeout(
                    "the provider's stream stalled", retryable=True, code="stream_stalled"
                ) from None
            finally:
                self._waiter = None
                if timer is not None:
                    timer.cancel()

    async def read(self) -> bytes:
        parts = []
        try:
            while (chunk := await self._next()) is not None:
                parts.append(chunk)
        except BaseException:
            self._abort()
            raise
        self._finished()
        return b"".join(parts)

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            while (chunk := await self._next()) is not None:
                yield chunk
        except BaseException:
            self._abort()
            raise
        self._finished()

    def close(self) -> None:
        """Abort: the provider stops generating for nobody."""
        if not self._done:
            self._abort()

    def release(self) -> None:
        if self._done:
            self._finished()
        else:
            self._abort()
