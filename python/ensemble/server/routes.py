"""The route table: exact paths in a dict, parameterised paths compiled once."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol
from urllib.parse import parse_qs

from ensemble.errors import MethodNotAllowed, NotFound
from ensemble.server.access import Auth
from ensemble.server.http import Family, Request

if TYPE_CHECKING:
    from ensemble.server.runtime import Runtime

Handler = Callable[["Runtime", Request], Awaitable[None]]


class HeaderView(Protocol):
    """Request headers: a dict or Granian's RSGIHeaders."""

    def get(self, key: str, default: None = None) -> str | None: ...


_PARAM = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # "/api/v1/status/{request_id}": a {name} matches one path segment
    handler: Handler
    family: Family = "native"
    auth: Auth = "client"  # who may call it, checked by the dispatcher before the handler (access.py)
    # A path several formats share (/v1/models): the family is the calling SDK's (client_family),
    # so its authentication, answer and errors are all in that SDK's shape.
    shared: bool = False


class RouteTable:
    def __init__(self, routes: list[Route]) -> None:
        self._exact: dict[str, dict[str, Route]] = {}
        self._patterns: list[tuple[re.Pattern[str], dict[str, Route]]] = []
        by_pattern: dict[str, dict[str, Route]] = {}
        for r in routes:
            if "{" in r.path:
                by_pattern.setdefault(r.path, {})[r.method] = r
            else:
                self._exact.setdefault(r.path, {})[r.method] = r
        for path, methods in by_pattern.items():
            regex = _PARAM.sub(
                lambda m: f"(?P<{m.group(1)}>[^/]+?)", re.escape(path).replace(r"\{", "{").replace(r"\}", "}")
            )
            self._patterns.append((re.compile(regex + "$"), methods))

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        methods = self._exact.get(path)
        params: dict[str, str] = {}
        if methods is None:
            for regex, candidate in self._patterns:
                m = regex.match(path)
                if m:
                    methods, params = candidate, m.groupdict()
                    break
        if methods is None:
            raise NotFound(f"no route for {method} {path[:200]}", code="route_not_found")
        route = methods.get(method)
        if route is None:
            if method == "HEAD" and "GET" in methods:
                return methods["GET"], params
            raise MethodNotAllowed(f"{method} is not allowed on {path[:200]}", tuple(sorted(methods)))
        return route, params

    def family_for(self, path: str, headers: HeaderView | None = None, query: str = "") -> Family:
        """Best guess of a path's error shape when no route matched (unknown routes, 405s): by the
        path, and under `/v1/` by what the client sent (see `client_family`)."""
        if path.startswith("/v1beta/"):
            return "gemini"
        if path.startswith("/v1/messages"):
            return "anthropic"
        if path.startswith("/v1/"):
            return client_family(headers or {}, query)
        if path.startswith("/admin/"):
            return "admin"
        return "native"


def client_family(headers: HeaderView, query: str = "") -> Family:
    """Which SDK is calling a path several formats share (`/v1/models`, unknown `/v1/…`): the
    Anthropic SDKs send `anthropic-version` (and their key in `x-api-key`), the Gemini ones
    `x-goog-api-key` (REST examples `?key=`); anything else is taken for OpenAI's."""
    if headers.get("anthropic-version") is not None:
        return "anthropic"
    if headers.get("x-goog-api-key") is not None or "key" in parse_qs(query):
        return "gemini"
    if headers.get("x-api-key") is not None and headers.get("authorization") is None:
        return "anthropic"
    return "openai"
