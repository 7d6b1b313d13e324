"""Stall and overall-time detection for one upstream stream.

Per-read timers (`asyncio.timeout` around every chunk) would cost a timer handle per token, which
matters at 10k open streams. Instead each stream has one lazily re-armed timer: reads only store
the time of the last byte, and the timer, when it fires, either finds the stream expired or re-arms
for the new deadline. On expiry the task currently awaiting the upstream is cancelled; the stream
code turns that cancellation back into an `UpstreamTimeout` (retryable) via `take_cancel()`.

Time is injected (`clock`), and `poll()` is the timer's whole decision, so tests drive it with a
fake clock and no event loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from ensemble.errors import UpstreamTimeout

Clock = Callable[[], float]


class StallWatchdog:
    __slots__ = (
        "_cancelled",
        "_handle",
        "_loop",
        "_reading",
        "_task",
        "clock",
        "expired",
        "last_activity",
        "overall_timeout",
        "stall_timeout",
        "started",
    )

    def __init__(self, stall_timeout: float, overall_timeout: float, clock: Clock = time.monotonic) -> None:
        self.stall_timeout = stall_timeout
        self.overall_timeout = overall_timeout
        self.clock = clock
        self.started = self.last_activity = clock()
        # (code, message) once expired. Not the exception itself: a stored exception keeps its
        # traceback's frames alive (the pump's included, and with it Granian's response transport,
        # which only ends the response when released).
        self.expired: tuple[str, str] | None = None
        self._reading = False
        self._task: asyncio.Task[object] | None = None
        self._cancelled = False
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- the decision (pure, clock-driven) ------------------------------------------------------

    def deadline(self) -> float:
        return min(self.last_activity + self.stall_timeout, self.started + self.overall_timeout)

    def check(self, now: float | None = None) -> UpstreamTimeout | None:
        """A timeout error if a deadline has passed at `now`, else None. Expiry is sticky."""
        if self.expired is None:
            now = self.clock() if now is None else now
            if now - self.started >= self.overall_timeout:
                self.expired = (
                    "stream_timeout",
                    f"the provider's stream exceeded the overall timeout of {self.overall_timeout:g}s",
                )
            elif now - self.last_activity >= self.stall_timeout:
                self.expired = (
                    "stream_stalled",
                    f"the provider sent nothing for {self.stall_timeout:g}s (stream stalled)",
                )
        return self.error()

    def error(self) -> UpstreamTimeout | None:
        if self.expired is None:
            return None
        code, message = self.expired
        return UpstreamTimeout(message, code=code, retryable=True)

    def poll(self) -> float | None:
        """Timer body: on expiry interrupt a pending read and return None; else the next deadline."""
        if self.check() is not None:
            if self._reading and self._task is not None and not self._task.done():
                self._cancelled = True
                self._task.cancel()
            return None
        return self.deadline()

    # -- reads ------------------------------------------------------------------------------------

    def begin_read(self) -> None:
        """About to await the upstream. Raises at once if a deadline already passed meanwhile.

        Time spent while we were not reading (the consumer was busy) is not the upstream's stall."""
        now = self.clock()
        error = self.check(now)
        if error is not None:
            raise error
        self.last_activity = now
        self._reading = True
        self._task = asyncio.current_task()

    def end_read(self) -> None:
        self._reading = False
        self.last_activity = self.clock()

    def take_cancel(self) -> UpstreamTimeout | None:
        """Called on CancelledError: the timeout error if the watchdog caused it (and un-cancel)."""
        if not self._cancelled:
            return None
        self._cancelled = False
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        return self.error()

    # -- the timer ----------------------------------------------------------------------------------

    def arm(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._schedule(self.deadline())

    def _schedule(self, deadline: float) -> None:
        assert self._loop is not None
        delay = max(deadline - self.clock(), 0.0)
        self._handle = self._loop.call_later(delay, self._fire)

    def _fire(self) -> None:
        self._handle = None
        deadline = self.poll()
        if deadline is not None:
            self._schedule(deadline)

    def disarm(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._reading = False
        self._task = None
