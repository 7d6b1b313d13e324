"""Everything one worker process holds: config, database, key table, providers, gateway, writers.

Built in `startup()` (from Granian's `__rsgi_init__`, before the loop serves) and torn down in
`shutdown()` (from `__rsgi_del__`, after Granian stopped accepting and in-flight requests ended).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Coroutine, Iterable
from pathlib import Path
from typing import Any

import aiosqlite

from ensemble import __version__, logs
from ensemble._native import KeyTable
from ensemble.auth import Authenticator
from ensemble.batch.service import BatchService
from ensemble.budget.ledger import Budgets
from ensemble.budget.loading import BudgetLoader
from ensemble.config.schema import Config
from ensemble.gateway import Gateway
from ensemble.providers import build_provider
from ensemble.providers.base import Endpoint, Provider
from ensemble.ratelimit import Admission
from ensemble.scaleout import Scaleout
from ensemble.storage import database
from ensemble.storage.credentials import CredentialCache
from ensemble.storage.crypto import Cipher, CryptoError
from ensemble.storage.keys import KeyRecord, Versioned, load_changed, store_shared
from ensemble.streaming.inflight import InFlightIndex
from ensemble.streaming.lag import LoopLagMonitor
from ensemble.telemetry import runtime as telemetry_setup
from ensemble.upstream import create_client
from ensemble.usage.journal import InFlightJournal, take_orphans
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
        # Spend budgets (docs/budgets.md): without Redis each worker admits on its share of what is
        # left; with Redis every account is gated by a lease from the shared budget.
        self.budgets = Budgets(
            share=1 if config.redis.address else max(1, config.server.workers),
            shared=bool(config.redis.address),
        )
        self.budget_loader = BudgetLoader(self.budgets, self._flush_log)
        self.gateway: Gateway | None = None
        self.batches: BatchService | None = None
        # Redis (shared limits, key sync) and S3 (responses), when configured; see ensemble/scaleout.py
        self.scaleout = Scaleout(config, self.admission, self._apply_shared_keys)
        self.scaleout.budgets = self.budgets
        self.scaleout.local_customers = lambda: self.budget_loader.local_customers
        self.scaleout.budget_seeds = self.budget_loader
        self.inflight = InFlightIndex()
        self.journal: InFlightJournal | None = None
        # ENSEMBLE_LOOP_LAG_REPORT=<seconds>: log event-loop lag percentiles that often (soak bench).
        self.lag = LoopLagMonitor(report_every=float(os.environ.get("ENSEMBLE_LOOP_LAG_REPORT") or 0))
        self._keys_seen_ms = 0
        self._keys_loaded = False
        self._key_versions: dict[bytes, int] = {}  # digest -> version of the record applied
        self._shared_to_store: list[Versioned] = []  # learnt from Redis, not yet in this SQLite
        self._tasks: list[asyncio.Task[None]] = []
        self.background: set[asyncio.Task[Any]] = set()
        self.accepting = True

    # -- lifecycle ------------------------------------------------------------------------------

    async def startup(self) -> None:
        self.db = await database.connect(self.config.database.path)
        await self.budget_loader.attach(self.db)
        await self.sync_keys()
        await self.budget_loader.sync_customers(self.db)
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
        await self._open_journal(self.request_log)
        self.request_log.start()
        await self.scaleout.start(self.request_log, self._local_keys)
        self.gateway = Gateway(self.config, self.providers, self.admission, self.request_log)
        self.gateway.budgets = self.budgets
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
        if self.journal is not None:
            self.journal.close()
        await self.upstream.close()
        await telemetry_setup.stop(self)
        if self.db is not None:
            await self.db.close()

    async def _open_journal(self, request_log: RequestLog) -> None:
        """This worker's crash journal, after taking over what dead workers left (usage/journal.py)."""
        if self.config.database.path == ":memory:":
            return
        directory = Path(self.config.database.path).parent / "journal"
        orphans = take_orphans(directory)
        self.journal = InFlightJournal(directory)
        self.journal.open()
        request_log.journal = self.inflight.journal = self.journal
        if orphans:
            written = await request_log.recover(orphans)
            log.warning(
                "recovered %d request(s) a dead worker left unwritten (%d recorded as failed: worker died)",
                written,
                sum(o.record is None for o in orphans),
            )

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        """Run work that must outlive its request (finishing an answer for a gone client)."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    # -- key table ------------------------------------------------------------------------------

    async def sync_keys(self) -> int:
        """Apply key changes saved in this instance's SQLite (by the CLI, the admin API, or learnt
        from other instances); the first call loads the whole table."""
        assert self.db is not None
        await self._store_shared_keys()
        changed, newest = await load_changed(self.db, self._keys_seen_ms)
        if not self._keys_loaded:  # an explicit flag: with no key saved yet the newest time stays 0
            self._keys_loaded = True
            self.keys.load([(d, r) for d, r, _ in changed])
            self._key_versions = {d: v for d, _, v in changed}
            for _, record, _ in changed:
                self._apply_limits(record)
            applied = len(changed)
            await self.budget_loader.keys_changed(self.db, [(d, r) for d, r, _ in changed])
        else:
            applied_keys = [(d, r) for d, r, v in changed if self._apply_key(d, r, v)]
            applied = len(applied_keys)
            await self.budget_loader.keys_changed(self.db, applied_keys)
        self._keys_seen_ms = newest
        return applied

    def _apply_key(self, digest: bytes, record: KeyRecord, version: int) -> bool:
        """Newest version wins, wherever it was saved (this SQLite or another instance's via Redis)."""
        if version < self._key_versions.get(digest, -1):
            return False
        self._key_versions[digest] = version
        self.keys.upsert(digest, record)
        self._apply_limits(record)
        return True

    async def _flush_log(self) -> None:
        if self.request_log is not None:
            await self.request_log.flush()

    def _apply_limits(self, record: KeyRecord) -> None:
        self.admission.configure_key(record)
        self.scaleout.watch_key(record)

    def _apply_shared_keys(self, changed: Iterable[Versioned]) -> None:
        """Key records from Redis (full load or a published change): applied when newer than what
        this instance holds, and kept in its SQLite (written at the next key poll)."""
        applied: list[tuple[bytes, KeyRecord]] = []
        for digest, record, version in changed:
            if self._apply_key(digest, record, version):
                self._shared_to_store.append((digest, record, version))
                applied.append((digest, record))
        self.budget_loader.keys_shared(applied)
        if self._shared_to_store and self.db is not None:
            self.spawn(self._store_shared_keys(), name="store-shared-keys")

    async def _store_shared_keys(self) -> None:
        assert self.db is not None
        if not self._shared_to_store:
            return
        batch, self._shared_to_store = self._shared_to_store, []
        try:
            await store_shared(self.db, batch)
        except sqlite3.OperationalError as e:  # busy (another writer): the next key poll tries again
            log.debug("keeping shared key changes for the next poll: %s", e)
            self._shared_to_store[:0] = batch

    async def _local_keys(self) -> list[Versioned]:
        """This instance's whole key table with versions, for reconciling with Redis."""
        assert self.db is not None
        return (await load_changed(self.db, 0))[0]

    async def _poll_keys(self) -> None:
        while True:
            await asyncio.sleep(KEY_POLL_INTERVAL)
            try:
                await self.sync_keys()
                assert self.db is not None
                await self.budget_loader.sync_customers(self.db)
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
