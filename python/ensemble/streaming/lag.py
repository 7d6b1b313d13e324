"""Event-loop lag: how late a periodic wake-up runs. One sleeping task per worker; cheap."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

log = logging.getLogger("ensemble.streaming")


class LoopLagMonitor:
    def __init__(self, interval: float = 0.1, report_every: float = 0.0) -> None:
        self.interval = interval
        self.report_every = report_every  # > 0: log a summary this often (soak benchmark)
        self.max_s = 0.0
        self.samples: list[float] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="loop-lag")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        last_report = time.monotonic()
        while True:
            t0 = time.monotonic()
            await asyncio.sleep(self.interval)
            lag = max(time.monotonic() - t0 - self.interval, 0.0)
            self.samples.append(lag)
            self.max_s = max(self.max_s, lag)
            if self.report_every and time.monotonic() - last_report >= self.report_every:
                last_report = time.monotonic()
                window = sorted(self.samples)
                self.samples.clear()
                log.info(
                    "loop lag p50=%.1fms p99=%.1fms max=%.1fms",
                    window[len(window) // 2] * 1000,
                    window[min(len(window) - 1, int(len(window) * 0.99))] * 1000,
                    window[-1] * 1000,
                )
            elif len(self.samples) > 10_000:
                del self.samples[:5_000]
