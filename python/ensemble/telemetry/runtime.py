"""Attaching telemetry to one worker's runtime (startup) and detaching it (shutdown)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from ensemble import telemetry

if TYPE_CHECKING:
    from ensemble.server.runtime import Runtime

log = logging.getLogger("ensemble.telemetry")

SAMPLE_INTERVAL = 1.0  # how often counters kept elsewhere (request-log drops) are mirrored


def start(rt: Runtime) -> None:
    telemetry.setup(rt.config)
    metrics = telemetry.metrics
    tracing = telemetry.tracing
    assert rt.gateway is not None
    if metrics is not None:
        rt._tasks.append(asyncio.get_running_loop().create_task(_sample(rt), name="telemetry-sample"))
    if tracing is not None:
        rt.gateway.calls = tracing.wrap(rt.gateway.calls)
        log.info("tracing: exporting spans over OTLP/HTTP to %s", rt.config.telemetry.otlp_endpoint)
    providers_changed(rt)


def providers_changed(rt: Runtime) -> None:
    """The runtime's providers were (re)built: at startup, and after a config reload."""
    assert rt.gateway is not None
    metrics = telemetry.metrics
    if metrics is not None:
        metrics.known_models = frozenset(rt.gateway.router.models())


async def _sample(rt: Runtime) -> None:
    while True:
        await asyncio.sleep(SAMPLE_INTERVAL)
        metrics = telemetry.metrics
        if metrics is not None and rt.request_log is not None:
            metrics.sync_dropped(rt.request_log.dropped)


async def stop(rt: Runtime) -> None:
    metrics = telemetry.metrics
    if metrics is not None and rt.request_log is not None:
        metrics.sync_dropped(rt.request_log.dropped)
    with contextlib.suppress(Exception):
        # The SDK's shutdown flushes over HTTP synchronously: keep it off the event loop.
        await asyncio.get_running_loop().run_in_executor(None, telemetry.shutdown)
