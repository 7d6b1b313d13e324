"""Prompt client-disconnect detection for a request whose handler may be waiting on a silent upstream.

Granian's RSGI `proto.client_disconnect()` resolves as soon as the peer closes the connection, both
before the response started and while it streams (verified against granian 2.8: it fired within the
client's close, and a later `send_bytes` raises RSGIProtocolClosed). A send only fails once we have
something to send, which during a stall may be never; so under `on_client_disconnect: cancel`
every inference request keeps this watch (`server.inference.watch_disconnect`).

On disconnect the handler task is cancelled: whatever it awaits
(the upstream's headers, its next chunk) is interrupted and the upstream response is closed by the
provider's `finally`. The handler uses `take_cancel()` to tell that cancellation from a shutdown.
"""

from __future__ import annotations

import asyncio
from typing import Any


class DisconnectWatch:
    __slots__ = ("_cancelled", "_closed", "_task", "_waiter", "gone")

    def __init__(self, proto: Any) -> None:
        self.gone = False
        self._cancelled = False
        self._closed = False
        self._task = asyncio.current_task()
        self._waiter: asyncio.Future[Any] = asyncio.ensure_future(proto.client_disconnect())
        self._waiter.add_done_callback(self._fired)

    def _fired(self, fut: asyncio.Future[Any]) -> None:
        if fut.cancelled():
            return
        # Granian fails the awaitable (RSGIProtocolClosed) when the worker shuts down under an open
        # request: taken here, or asyncio logs "Future exception was never retrieved" at collection.
        if fut.exception() is not None or self._closed:
            return
        self.gone = True
        if self._task is not None and not self._task.done():
            self._cancelled = True
            self._task.cancel()

    def detach(self) -> None:
        """The handler finished or handed the stream to a background task: stop cancelling it."""
        self._closed = True
        # Break the waiter -> callback -> watch -> waiter cycle before cancelling: left in place, a
        # task wrapping Granian's client_disconnect() awaitable is never reclaimed (measured: ~1.2 KB
        # of RSS per request, for as long as the worker lives).
        self._waiter.remove_done_callback(self._fired)
        if not self._waiter.done():
            self._waiter.cancel()

    def take_cancel(self) -> bool:
        """On CancelledError: True (and un-cancel) when the cancellation was ours."""
        if not self._cancelled:
            return False
        self._cancelled = False
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        return True
