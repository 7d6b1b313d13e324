"""The RSGI application Granian serves: dispatch, error rendering, and the worker lifecycle hooks."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from granian._granian import RSGIHTTPProtocol as HTTPProtocol
from granian.rsgi import Scope

from ensemble import logs
from ensemble.config import Config, load_config
from ensemble.errors import EnsembleError
from ensemble.server import admin, errors, formats, inference, info, websocket
from ensemble.server.http import Request, new_request_id
from ensemble.server.routes import RouteTable
from ensemble.server.runtime import Runtime

log = logging.getLogger("ensemble.server")

CONFIG_ENV = "ENSEMBLE_CONFIG_FILE"  # how `ensemble serve` tells worker processes which config to load
OVERRIDES_ENV = "ENSEMBLE_SERVE_OVERRIDES"  # host/port/workers given on the command line, as JSON


class App:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.runtime = Runtime(config)
        self.routes = RouteTable(inference.ROUTES + formats.ROUTES + info.ROUTES + admin.ROUTES)

    # Granian's lifecycle hooks: the loop is not running yet in init, and no longer in del.
    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.run_until_complete(self.runtime.startup())
        log.info("worker %d ready", os.getpid())

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.run_until_complete(self.runtime.shutdown())
        log.info("worker %d stopped", os.getpid())

    async def __rsgi__(self, scope: Scope, proto: Any) -> None:
        if scope.proto != "http":
            await websocket.handle(self.runtime, scope, proto)
            return
        await self.handle(scope, proto)

    async def handle(self, scope: Scope, proto: HTTPProtocol) -> None:
        family = self.routes.family_for(scope.path)
        req: Request | None = None
        try:
            req = Request(scope, proto)
            route, params = self.routes.match(scope.method, scope.path)
            req.family = family = route.family
            req.params = params
            await route.handler(self.runtime, req)
        except EnsembleError as e:
            self._fail(req, proto, e, family)
        except Exception:
            rid = req.request_id if req else "-"
            log.exception("unhandled error in %s %s (request %s)", scope.method, scope.path[:200], rid)
            self._fail(
                req, proto, EnsembleError("internal error; the request id identifies it in the logs"), family
            )

    @staticmethod
    def _fail(req: Request | None, proto: HTTPProtocol, error: EnsembleError, family: Any) -> None:
        if req is not None and req.responded:
            return  # a stream already started; its pump reported the error in-band
        request_id = req.request_id if req is not None else new_request_id()
        status, headers, body = errors.render(error, family, request_id)
        headers = [("content-type", "application/json"), ("x-request-id", request_id), *headers]
        proto.response_bytes(status, headers, body)


def create_app() -> App:
    """Granian's factory target: each worker process loads the config `ensemble serve` validated."""
    import orjson

    config = load_config(os.environ.get(CONFIG_ENV, "config/ensemble.yaml"))
    overrides = orjson.loads(os.environ.get(OVERRIDES_ENV) or "{}")
    for key, value in overrides.items():
        setattr(config.server, key, value)
    logs.configure(config.logging.level, config.logging.format)
    return App(config)
