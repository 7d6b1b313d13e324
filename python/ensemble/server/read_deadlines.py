"""`server.read_timeout`: how long a request body may take to arrive (see docs/configuration.md).

A timer per request (`asyncio.timeout`) cost ~10 µs of CPU per request in the in-process pipeline
bench (about a tenth of the whole); here a body read only notes its deadline in a dict, and one
sweeper task per worker, waking every tenth of the timeout (at most every second), cancels the reads
that are overdue. The cancelled read is turned into a 408 by `Request.body`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

Task = asyncio.Task[Any]


class ReadDeadlines:
    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.interval = min(max(timeout / 10, 0.05), 1.0)
        self._reading: dict[Task, float] = {}
        self._expired: set[Task] = set()
        self._sweeper: asyncio.Task[None] | None = None

    def begin(self) -> Task | None:
        """The current task starts reading a body (None outside a task: nothing is timed)."""
        task = asyncio.current_task()
        if task is None:
            return None
        self._reading[task] = time.monotonic() + self.timeout
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep(), name="read-deadlines")
        return task

    def end(self, task: Task) -> bool:
        """The read is over; True when it was cut off by its deadline (its cancellation is undone)."""
        self._reading.pop(task, None)
        if task not in self._expired:
            return False
        self._expired.discard(task)
        task.uncancel()
        return True

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            if not self._reading:
                continue
            now = time.monotonic()
            for task in [t for t, deadline in self._reading.items() if deadline <= now]:
                del self._reading[task]
                self._expired.add(task)
                task.cancel()

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
