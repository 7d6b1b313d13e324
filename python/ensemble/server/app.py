"""The RSGI application Granian serves: dispatch, error rendering, and the worker lifecycle hooks."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import time
from typing import Any

import orjson

from ensemble import logs, telemetry
from ensemble.config import Config
from ensemble.config_loader import load_config
from ensemble.errors import EnsembleError, RateLimited
from ensemble.server import (
    access,
    admin,
    anthropic_batch_routes,
    batch_routes,
    embeddings,
    errors,
    formats,
    inference,
    info,
    metrics_endpoint,
    model_routes,
    responses,
    ui,
    websocket,
)
from ensemble.server.busy_poll import BusyPoll
from ensemble.server.granian_rsgi import HTTPProtocol, Scope
from ensemble.server.http import Request, new_request_id
from ensemble.server.read_deadlines import ReadDeadlines
from ensemble.server.reload import Reloader
from ensemble.server.routes import RouteTable, client_family
from ensemble.server.runtime import Runtime

log = logging.getLogger("ensemble.server")

CONFIG_ENV = "ENSEMBLE_CONFIG_FILE"  # how `ensemble serve` tells worker processes which config to load
OVERRIDES_ENV = "ENSEMBLE_SERVE_OVERRIDES"  # host/port/workers given on the command line, as JSON

# Every route the server answers, each with the authentication the dispatcher enforces (access.py).
ROUTES = (
    inference.ROUTES
    + responses.ROUTES
    + formats.ROUTES
    + embeddings.ROUTES
    + info.ROUTES
    + model_routes.ROUTES
    + admin.ROUTES
    + ui.ROUTES
    + metrics_endpoint.ROUTES
    + batch_routes.ROUTES
    + anthropic_batch_routes.ROUTES
)


class App:
    def __init__(self, config: Config) -> None:
        self.runtime = Runtime(config)
        self.reloader = Reloader(self.runtime, served_config)
        self.busy_poll = BusyPoll(float(config.server.busy_poll))
        # server.read_timeout is read at start, like Granian's settings; 0 turns it off.
        timeout = float(config.server.read_timeout)
        self.read_deadlines = ReadDeadlines(timeout) if timeout > 0 else None
        self.routes = RouteTable(ROUTES)

    # Granian's lifecycle hooks: the loop is not running yet in init, and no longer in del.
    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a reload before the worker is up has nothing to reload
        loop.run_until_complete(self.runtime.startup())
        self.reloader.install(loop)
        # Everything built so far (modules, config, tables) lives as long as the worker: keep the
        # cyclic collector from re-scanning it. Without this each full collection walked the whole
        # heap (~18 ms, measured under load: the largest source of p99 latency).
        gc.collect()
        gc.freeze()
        # Collect the young generation after 50,000 new objects instead of 700. With thousands of
        # open streams each collection found the same in-flight objects alive and promoted them,
        # so full collections over a 400 MB heap followed every few seconds: 28% of the worker's
        # time at 5,000 streams x 10 tokens/s, down to ~5% (benches/soak, `gc` in the lag lines).
        gc.set_threshold(50_000, 20, 100)
        log.info("worker %d ready", os.getpid())

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.read_deadlines is not None:
            self.read_deadlines.close()
        loop.run_until_complete(self.runtime.shutdown())
        log.info("worker %d stopped", os.getpid())

    async def __rsgi__(self, scope: Scope, proto: Any) -> None:
        if scope.proto != "http":
            await websocket.handle(self.runtime, scope, proto)
            return
        busy = self.busy_poll
        busy.enter()
        try:
            await self.handle(scope, proto)
        finally:
            busy.exit()

    async def handle(self, scope: Scope, proto: HTTPProtocol) -> None:
        tracing = telemetry.tracing
        if tracing is None:  # the common case: no tracer code at all on the request path
            await self._handle(scope, proto)
            return
        with tracing.request_span(scope) as span:
            outcome = await self._handle(scope, proto)
            tracing.annotate(span, scope.method, *outcome)

    async def _handle(self, scope: Scope, proto: HTTPProtocol) -> tuple[str, int, str, str, str]:
        """Serve one exchange; returns (route, status, request id, model, provider) for telemetry."""
        req: Request | None = None
        route_path = "unmatched"
        status = 0
        try:
            req = Request(scope, proto, self.read_deadlines)
            req.check_request_id()
            route, params = self.routes.match(scope.method, scope.path)
            req.family = (
                client_family(scope.headers, scope.query_string or "") if route.shared else route.family
            )
            req.params = params
            route_path = route.path
            if route.auth != "none":
                access.check(route.auth, self.runtime.auth, req)
            await route.handler(self.runtime, req)
            status = req.status
            # A handler that answered without reading a body (GET /health with one): read it now,
            # or the connection closes under the client's next request.
            await req.drain()
        except EnsembleError as e:
            status = await self._fail(req, proto, e, self._family(scope, req, route_path))
        except Exception:
            rid = req.request_id if req else "-"
            log.exception("unhandled error in %s %s (request %s)", scope.method, scope.path[:200], rid)
            status = await self._fail(
                req,
                proto,
                EnsembleError("internal error; the request id identifies it in the logs"),
                self._family(scope, req, route_path),
            )
        call = req.call if req is not None else None
        model = provider = ""
        if call is not None:
            model = call.model
            if call.target is not None:
                provider = call.target.provider.name
        metrics = telemetry.metrics
        if metrics is not None:
            started = req.started if req is not None else 0.0
            metrics.http(
                route_path, model, provider, status, time.perf_counter() - started if started else 0.0
            )
        return route_path, status, req.request_id if req is not None else "", model, provider

    def _family(self, scope: Scope, req: Request | None, route_path: str) -> Any:
        """The error shape for a failed exchange: the matched route's (a route several formats
        share, like /v1/models, names the caller's in req.family), else a guess from the path."""
        if req is not None and route_path != "unmatched":
            return req.family
        return self.routes.family_for(scope.path, scope.headers, scope.query_string or "")

    @staticmethod
    async def _fail(req: Request | None, proto: HTTPProtocol, error: EnsembleError, family: Any) -> int:
        if req is not None and req.responded:
            return req.status  # a stream already started; its pump reported the error in-band
        metrics = telemetry.metrics
        if metrics is not None and isinstance(error, RateLimited):
            metrics.rate_limited.labels(error.code).inc()
        request_id = req.request_id if req is not None else new_request_id()
        status, headers, body = errors.render(error, family, request_id)
        headers = [("content-type", "application/json"), ("x-request-id", request_id), *headers]
        # A refusal before the body was read (401, 404, 405, 413): drain it so the client's next
        # request on this connection is answered, or tell the client the connection ends here.
        if req is None or not await req.drain():
            headers.append(("connection", "close"))
        proto.response_bytes(status, headers, body)
        return status


def served_config() -> Config:
    """The config `ensemble serve` was started with (its file, read now, and the command line's
    host/port/workers); ConfigError when the file has problems."""
    config = load_config(os.environ.get(CONFIG_ENV, "config/ensemble.yaml"))
    overrides = orjson.loads(os.environ.get(OVERRIDES_ENV) or "{}")
    for key, value in overrides.items():
        setattr(config.server, key, value)
    return config


def create_app() -> App:
    """Granian's factory target: each worker process loads the config `ensemble serve` validated."""
    config = served_config()
    logs.configure(config.logging.level, config.logging.format)
    return App(config)
