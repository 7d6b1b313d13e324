"""The coalescing relay: a producer task reads the upstream into a bounded queue while the consumer
merges what arrives within `coalescence_window` into one frame.

The queue is the per-stream buffer bound: when the client side falls behind, the producer waits on
the full queue and stops reading the upstream socket (TCP pushes back on the provider). The
producer is a separate task so the window timer can interrupt a `queue.get()` (safe to cancel)
rather than an upstream read (cancelling that would abort the upstream call).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from ensemble.errors import EnsembleError, ProviderError
from ensemble.streaming.coalesce import Coalescer
from ensemble.types import StreamDelta

if TYPE_CHECKING:  # the gateway hands the relay its streams; providers (below it) use this package
    from ensemble.gateway import LiveStream

log = logging.getLogger("ensemble.streaming")

QUEUE_LIMIT = 64  # deltas buffered per stream between the upstream reader and the client writer

_Item = StreamDelta | EnsembleError | None


class CoalescedRelay:
    def __init__(self, stream: LiveStream, window: float) -> None:
        self.stream = stream
        self.window = window
        self.queue: asyncio.Queue[_Item] = asyncio.Queue(maxsize=QUEUE_LIMIT)
        self.producer = asyncio.get_running_loop().create_task(self._produce(), name="stream-producer")

    async def _produce(self) -> None:
        try:
            while (delta := await self.stream.next()) is not None:
                await self.queue.put(delta)
            await self.queue.put(None)
        except EnsembleError as e:
            await self.queue.put(e)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("upstream reader of a coalesced stream failed")
            await self.queue.put(ProviderError("internal error while streaming", code="internal_error"))

    async def run(self, send: Callable[[StreamDelta], None]) -> None:
        """Relay until the end of the answer; raises the stream's error after flushing what came first."""
        loop = asyncio.get_running_loop()
        co = Coalescer()
        deadline: float | None = None
        while True:
            if deadline is None:
                item = await self.queue.get()
            else:
                try:
                    async with asyncio.timeout_at(deadline):
                        item = await self.queue.get()
                except TimeoutError:
                    for delta in co.flush():
                        send(delta)
                    deadline = None
                    continue
            if item is None or isinstance(item, EnsembleError):
                for delta in co.flush():
                    send(delta)
                if item is not None:
                    raise item
                return
            out = co.push(item)
            for delta in out:
                send(delta)
            if not co.pending:
                deadline = None
            elif deadline is None or out:
                deadline = loop.time() + self.window

    async def drain(self) -> None:
        """`complete` after a disconnect: consume what the producer reads, then price and store."""
        try:
            while True:
                item = await self.queue.get()
                if item is None:
                    self.stream.response()
                    return
                if isinstance(item, EnsembleError):
                    self.stream.fail(item)
                    return
        except asyncio.CancelledError:
            self.cancel()
            await self.stream.aclose()
            self.stream.fail(
                ProviderError("the gateway shut down before the answer completed", code="shutdown")
            )
            raise

    def cancel(self) -> None:
        if not self.producer.done():
            self.producer.cancel()
