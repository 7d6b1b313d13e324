"""Everything one worker process holds: config, database, key table, providers, gateway, writers.

Built in `startup()` (from Granian's `__rsgi_init__`, before the loop serves) and torn down in
`shutdown()` (from `__rsgi_del__`, after Granian stopped accepting and in-flight requests ended).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Coroutine, Iterable
from typing import Any

import aiosqlite

from ensemble import __version__, logs
from ensemble._native import KeyTable
from ensemble.auth import Authenticator
from ensemble.batch.service import BatchService
from ensemble.config.schema import Config
from ensemble.gateway import Gateway
from ensemble.providers import build_provider
from ensemble.providers.base import Endpoint, Provider
from ensemble.ratelimit import Admission
from ensemble.scaleout import Scaleout
from ensemble.storage import database
from ensemble.storage.credentials import CredentialCache
from ensemble.storage.crypto import Cipher, CryptoError
from ensemble.storage.keys import KeyRecord, load_changed
from ensemble.streaming.inflight import InFlightIndex
from ensemble.streaming.lag import LoopLagMonitor
from ensemble.telemetry import runtime as telemetry_setup
from ensemble.upstream import create_client
from ensemble.usage.request_log import RequestLog

log = logging.getLogger("ensemble.server")

KEY_POLL_INTERVAL = 1.0  # keys created or revoked by the CLI (or another worker) apply within this


class Runtime:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.version = __version__
        self.started_at = time.time()
        self.keys = KeyTable()
        self.auth = Authenticator(self.keys)
        self.db: aiosqlite.Connection | None = None
        self.request_log: RequestLog | None = None
        self.upstream = create_client(
            connect_timeout=config.provider_timeouts.connect,
            read_timeout=config.provider_timeouts.default,
            max_connections_per_host=config.provider_timeouts.max_connections_per_host,
        )
        self.providers: list[Provider] = []
        self.endpoints: dict[str, Endpoint] = {}
        self._config_keys: dict[str, str] = {}  # endpoint id -> api_key from config ("" = use stored)
        self.credentials = CredentialCache(None)
        self.admission = Admission(
            window_s=config.rate_limit.window_size,
            default_rpm=config.rate_limit.default_rpm,
            default_tpm=config.rate_limit.default_tpm,
        )
        self.gateway: Gateway | None = None
        self.batches: BatchService | None = None
        # Redis (shared limits, key sync) and S3 (responses), when configured; see ensemble/scaleout.py
        self.scaleout = Scaleout(config, self.admission, self._apply_shared_keys)
        self.inflight = InFlightIndex()
        # ENSEMBLE_LOOP_LAG_REPORT=<seconds>: log event-loop lag percentiles that often (soak bench).
        self.lag = LoopLagMonitor(report_every=float(os.environ.get("ENSEMBLE_LOOP_LAG_REPORT") or 0))
        self._keys_seen_ms = 0
        self._local_records: list[tuple[bytes, KeyRecord]] = []
        self._shared_digests: set[bytes] = set()  # keys Redis told us about: local rows no longer win
        self._tasks: list[asyncio.Task[None]] = []
        self.background: set[asyncio.Task[Any]] = set()
        self.accepting = True

    # -- lifecycle ------------------------------------------------------------------------------

    async def startup(self) -> None:
        self.db = await database.connect(self.config.database.path)
        await self.sync_keys()
        await self.upstream.start()
        self.providers = [
            build_provider(pc, self.upstream.client_for(pc.http)) for pc in self.config.providers
        ]
        await self._start_credentials()
        for provider in self.providers:
            for e in provider.endpoints:
                if not e.has_credential:
                    log.warning(
                        "endpoint %s of provider %s has no API key: reported unavailable", e.id, provider.name
                    )
        self.request_log = RequestLog(
            self.db,
            keep_rows=self.config.logging.request_log,
            capacity=self.config.logging.request_log_buffer,
        )
        self.request_log.start()
        await self.scaleout.start(self.request_log, self._local_keys)
        self.gateway = Gateway(self.config, self.providers, self.admission, self.request_log)
        self.gateway.on_recorded = self.inflight.discard
        if self.lag.report_every:
            self.lag.start()
        telemetry_setup.start(self)
        self.batches = await BatchService.open(self)
        self.batches.start()
        self._tasks.append(asyncio.get_running_loop().create_task(self._poll_keys(), name="key-sync"))
        self._tasks.append(
            asyncio.get_running_loop().create_task(self._poll_credentials(), name="credential-sync")
        )

    async def shutdown(self) -> None:
        self.accepting = False
        if self.background:
            log.info(
                "waiting for %d answer(s) still completing for disconnected clients", len(self.background)
            )
            _, pending = await asyncio.wait(self.background, timeout=self.config.server.drain_timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)
        await self.lag.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.batches is not None:
            await self.batches.close()
        await self.scaleout.stop()
        if self.request_log is not None:
            await self.request_log.close()
            log.info(
                "request log flushed: %d records written, %d dropped",
                self.request_log.written,
                self.request_log.dropped,
            )
        await self.upstream.close()
        await telemetry_setup.stop(self)
        if self.db is not None:
            await self.db.close()

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        """Run work that must outlive its request (finishing an answer for a gone client)."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    # -- key table ------------------------------------------------------------------------------

    async def sync_keys(self) -> int:
        assert self.db is not None
        changed, newest = await load_changed(self.db, self._keys_seen_ms)
        if self._keys_seen_ms == 0:
            self._local_records = list(changed)
            self.keys.load(list(changed))
        else:
            # A key Redis told us about is not overridden by this instance's (older) local row.
            changed = [(d, r) for d, r in changed if d not in self._shared_digests]
            for digest, record in changed:
                self.keys.upsert(digest, record)
        for _, record in changed:
            self._apply_limits(record)
        self._keys_seen_ms = newest
        return len(changed)

    def _apply_limits(self, record: KeyRecord) -> None:
        self.admission.configure_key(record)
        self.scaleout.watch_key(record)

    def _apply_shared_keys(self, changed: Iterable[tuple[bytes, KeyRecord]]) -> None:
        """Key records from Redis (full load or a published change) win over the local table."""
        for digest, record in changed:
            self._shared_digests.add(digest)
            self.keys.upsert(digest, record)
            self._apply_limits(record)

    def _local_keys(self) -> list[tuple[bytes, KeyRecord]]:
        return self._local_records

    async def _poll_keys(self) -> None:
        while True:
            await asyncio.sleep(KEY_POLL_INTERVAL)
            try:
                await self.sync_keys()
            except Exception:
                log.exception("key table sync failed; retrying")

    # -- provider credentials (config first, else the encrypted store) ---------------------------

    async def _start_credentials(self) -> None:
        logs.register_secret(os.environ.get("ENSEMBLE_ADMIN_KEY", ""))
        try:
            cipher = Cipher.from_environment()
        except CryptoError as problem:
            log.error("stored provider credentials are disabled: %s", problem)
            cipher = None
        self.credentials = CredentialCache(cipher)
        self._index_endpoints()
        await self.sync_credentials()

    def _index_endpoints(self) -> None:
        """Endpoints by id, and which of them have a key in the config."""
        self.endpoints = {e.id: e for provider in self.providers for e in provider.endpoints}
        self._config_keys = {endpoint_id: e.api_key for endpoint_id, e in self.endpoints.items()}
        for key in self._config_keys.values():
            logs.register_secret(key)

    async def sync_credentials(self) -> None:
        assert self.db is not None
        if await self.credentials.sync(self.db):
            self._apply_stored_credentials()

    def _apply_stored_credentials(self) -> None:
        for endpoint_id, endpoint in self.endpoints.items():
            if self._config_keys.get(endpoint_id):
                continue  # a key in the config wins over a stored one
            value = self.credentials.values.get(endpoint_id, "")
            logs.register_secret(value)
            endpoint.api_key = value

    # -- config reload ---------------------------------------------------------------------------

    def reconfigure(self, config: Config) -> None:
        """Serve a reloaded config (validated, restart-only settings already put back; see
        server/reload.py) from the next request on, keeping every counter: endpoints that still
        exist keep their Endpoint object (requests in flight, failures, cool-down), rate-limit
        windows stay in Admission, the affinity table moves to the new router. Synchronous, so
        no request sees half of it; nothing running is changed until everything new is built."""
        providers = [build_provider(pc, self.upstream.client_for(pc.http)) for pc in config.providers]
        running = {e.id: e for provider in self.providers for e in provider.endpoints}
        for provider in providers:
            provider.endpoints = [
                running[e.id].take_over(e) if e.id in running else e for e in provider.endpoints
            ]
        self.config = config
        self.providers = providers
        self._index_endpoints()
        self._apply_stored_credentials()
        self.admission.default_rpm = config.rate_limit.default_rpm
        self.admission.default_tpm = config.rate_limit.default_tpm
        self.admission.retain_endpoints(
            {(e.id, m): (e.rpm_limit, e.tpm_limit) for p in providers for e in p.endpoints for m in p.models}
        )
        assert self.gateway is not None
        self.gateway.reconfigure(config, providers)
        telemetry_setup.providers_changed(self)

    def credential_source(self, endpoint_id: str) -> str:
        """Which credential an endpoint's requests carry: config | stored | none."""
        if self._config_keys.get(endpoint_id):
            return "config"
        return "stored" if endpoint_id in self.credentials.values else "none"

    async def _poll_credentials(self) -> None:
        while True:
            await asyncio.sleep(KEY_POLL_INTERVAL)
            try:
                await self.sync_credentials()
            except Exception:
                log.exception("credential sync failed; retrying")

    # -- views ----------------------------------------------------------------------------------

    def provider_health(self) -> dict[str, str]:
        health = {p.name: p.health() for p in self.providers}
        for pc in self.config.providers:
            health.setdefault(pc.name, "unavailable")
        return health
