"""Config reload on SIGHUP (docs/configuration.md#reloading-the-config), without a restart.

Granian's own SIGHUP respawns every worker, which would drop what each worker holds in memory:
rate-limit windows, the cache-affinity table, endpoint cool-downs, requests in flight. So the main
process takes SIGHUP itself (`forward_sighup`): it checks the new config, logs every problem and
keeps the running config when there is one, else passes the signal to each worker, and every
worker (`Reloader`) reads the file again and swaps its providers, models, prices, rules and limits
in between requests (`Runtime.reconfigure`).

Settings that only take effect when the process starts (`RESTART_ONLY`: the listening address,
workers, database, Redis, S3, …) keep their running values; each one that changed is logged as
needing a restart.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any

import msgspec

from ensemble.config.durations import Duration, format_duration
from ensemble.config.schema import Config
from ensemble.errors import ConfigError

if TYPE_CHECKING:
    from ensemble.server.runtime import Runtime

log = logging.getLogger("ensemble.reload")

# Key paths read once when a worker starts; a reload reports their changes instead of applying them.
RESTART_ONLY: tuple[tuple[str, ...], ...] = (
    ("server", "host"),
    ("server", "port"),
    ("server", "workers"),
    ("server", "read_timeout"),
    ("server", "idle_timeout"),
    ("server", "drain_timeout"),
    ("server", "busy_poll"),
    ("database",),
    ("redis",),
    ("persistence",),
    ("rate_limit", "window_size"),
    ("rate_limit", "sync_interval"),
    ("cache", "max_cache_entries"),
    ("provider_timeouts", "connect"),
    ("batch",),
    ("logging",),
    ("telemetry",),
)


SECRET_KEYS = ("password", "username")  # shown by name only


def _get(config: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        config = getattr(config, key)
    return config


def _plain(value: Any) -> Any:
    def duration(d: Any) -> str:
        if isinstance(d, Duration):
            return format_duration(d)
        raise NotImplementedError(type(d))

    return msgspec.to_builtins(value, enc_hook=duration)


def _leaves(value: Any, path: str) -> dict[str, Any]:
    if isinstance(value, dict):
        return {k: v for key, sub in value.items() for k, v in _leaves(sub, f"{path}.{key}").items()}
    return {path: value}


def keep_restart_only(running: Config, fresh: Config) -> list[str]:
    """Put the running values of `RESTART_ONLY` settings back into `fresh`; returns one note per
    setting that differed (`server.port (5180 -> 5181) takes effect only after a restart …`)."""
    notes = []
    for path in RESTART_ONLY:
        old, new = _get(running, path), _get(fresh, path)
        before = _leaves(_plain(old), ".".join(path))
        after = _leaves(_plain(new), ".".join(path))
        for key in sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k)):
            shown = "" if key.endswith(SECRET_KEYS) else f" ({before.get(key)!r} -> {after.get(key)!r})"
            notes.append(f"{key}{shown} takes effect only after a restart; the running value is kept")
        setattr(_get(fresh, path[:-1]), path[-1], old)
    return notes


def log_refused(error: ConfigError, source: str) -> None:
    log.error(
        "config reload refused: %d problem(s) in %s or its provider files; still serving the running config",
        len(error.problems),
        source,
    )
    for problem in error.problems:
        log.error("%s", problem)


class Reloader:
    """SIGHUP in a worker: read the config again and serve it from the next request on."""

    def __init__(self, runtime: Runtime, load: Callable[[], Config]) -> None:
        self.runtime = runtime
        self.load = load
        self._task: asyncio.Task[None] | None = None
        self._again = False
        self.reloads = 0

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.add_signal_handler(signal.SIGHUP, self.request)

    def request(self) -> None:
        if self._task is not None and not self._task.done():
            self._again = True  # the file may have changed again since this reload read it
            return
        self._task = asyncio.get_running_loop().create_task(self._run(), name="config-reload")

    async def _run(self) -> None:
        while True:
            self._again = False
            try:
                await self.reload()
            except Exception:  # a bug, not a bad config: say so and keep serving what runs
                log.exception("config reload failed; still serving the running config")
            if not self._again:
                return

    async def reload(self) -> bool:
        """One reload; False when the new config was refused (the running one stays)."""
        rt = self.runtime
        source = rt.config.source
        try:
            # Reading and validating the files is blocking work: off the event loop.
            fresh = await asyncio.get_running_loop().run_in_executor(None, self.load)
        except ConfigError as e:
            log_refused(e, source)
            return False
        notes = keep_restart_only(rt.config, fresh)
        rt.reconfigure(fresh)
        self.reloads += 1
        models = len(rt.gateway.router.models()) if rt.gateway is not None else 0
        log.info(
            "worker %d: config reloaded from %s (%d provider(s), %d model(s))",
            os.getpid(),
            source,
            len(rt.providers),
            models,
        )
        for note in notes:
            log.warning("worker %d: %s", os.getpid(), note)
        return True


def forward_sighup(load: Callable[[], Config], source: str) -> None:
    """In `ensemble serve`'s main process, once Granian has installed its signal handlers: SIGHUP
    checks the config (`load`) and, when it is valid, passes the signal on to every worker."""
    main = os.getpid()

    def handle(_signum: int, _frame: FrameType | None) -> None:
        if os.getpid() != main:
            return  # a freshly forked worker that has not installed its own handler yet
        try:
            load()
        except ConfigError as e:
            log_refused(e, source)
            return
        workers = [w.pid for w in multiprocessing.active_children() if w.pid]
        log.info("SIGHUP: reloading %s in %d worker(s)", source, len(workers))
        for pid in workers:
            os.kill(pid, signal.SIGHUP)

    signal.signal(signal.SIGHUP, handle)
