"""Event-loop lag: how late a periodic wake-up runs. One sleeping task per worker; cheap."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from typing import Any

log = logging.getLogger("ensemble.streaming")


class LoopLagMonitor:
    def __init__(self, interval: float = 0.1, report_every: float = 0.0) -> None:
        self.interval = interval
        self.report_every = report_every  # > 0: log a summary this often (soak benchmark)
        self.max_s = 0.0
        self.samples: list[float] = []
        self._task: asyncio.Task[None] | None = None
        # per generation: collections, seconds in total, longest. Reported with the lag because a
        # collection over a large live heap (thousands of open streams) is a usual cause of a spike.
        self.gc_stats = [[0, 0.0, 0.0] for _ in range(3)]
        self._gc_t0 = 0.0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="loop-lag")
        if self.report_every:
            gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_t0 = time.perf_counter()
            return
        took = time.perf_counter() - self._gc_t0
        stats = self.gc_stats[info["generation"]]
        stats[0] += 1
        stats[1] += took
        stats[2] = max(stats[2], took)

    def _gc_summary(self) -> str:
        parts = [
            f"gen{gen} n={n} total={total * 1000:.0f}ms max={longest * 1000:.1f}ms"
            for gen, (n, total, longest) in enumerate(self.gc_stats)
        ]
        self.gc_stats = [[0, 0.0, 0.0] for _ in range(3)]
        return ", ".join(parts)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

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
                    "loop lag p50=%.1fms p99=%.1fms max=%.1fms; gc %s",
                    window[len(window) // 2] * 1000,
                    window[min(len(window) - 1, int(len(window) * 0.99))] * 1000,
                    window[-1] * 1000,
                    self._gc_summary(),
                )
            elif len(self.samples) > 10_000:
                del self.samples[:5_000]
