"""What every admin resource shares: body and query parsing, JSON responses, running the CLI's
synchronous storage functions off the loop. (The admin key is checked by the dispatcher: access.py.)"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import msgspec
import orjson

from ensemble.api.common import convert, decode_object
from ensemble.errors import InvalidRequest
from ensemble.server.http import Request
from ensemble.server.runtime import Runtime
from ensemble.storage import database
from ensemble.usage.pricing import format_cost

MAX_BODY = 64 * 1024  # admin bodies are small; anything bigger is a mistake or an attack
DEFAULT_PAGE = 50
MAX_PAGE = 1000

_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")

T = TypeVar("T")


class Body(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of the admin request bodies: an unknown field is a client mistake, refused by name."""


async def body_as(req: Request, typ: type[T]) -> T:
    return convert(decode_object(await req.body(MAX_BODY)), typ)


def query(req: Request, allowed: tuple[str, ...]) -> dict[str, str]:
    """The query parameters, refusing unknown or repeated ones (a typo in a filter must not be ignored)."""
    out: dict[str, str] = {}
    try:
        pairs = parse_qsl(req.scope.query_string, keep_blank_values=True, max_num_fields=50)
    except ValueError as e:
        raise InvalidRequest(f"query string: {e}", code="invalid_query") from None
    for name, value in pairs:
        if name not in allowed:
            raise InvalidRequest(
                f"{name[:50]}: unknown query parameter (allowed: {', '.join(allowed)})",
                code="invalid_query",
                param=name[:50],
            )
        if name in out:
            raise InvalidRequest(f"{name}: given more than once", code="invalid_query", param=name)
        out[name] = value
    return out


def int_param(params: dict[str, str], name: str, default: int, maximum: int) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > 12:
        raise InvalidRequest(f"{name}: expected a non-negative integer", code="invalid_query", param=name)
    value = int(raw)
    if value > maximum:
        raise InvalidRequest(f"{name}: must be at most {maximum}", code="invalid_query", param=name)
    return value


def page(params: dict[str, str]) -> tuple[int, int]:
    return int_param(params, "limit", DEFAULT_PAGE, MAX_PAGE), int_param(params, "offset", 0, 10**12)


def path_id(req: Request, name: str) -> str:
    value = req.params[name]
    if not _ID.fullmatch(value):
        raise InvalidRequest(
            f"{name}: must be 1-128 characters of letters, digits and . _ : -", code="invalid_id", param=name
        )
    return value


def send(req: Request, body: Any, status: int = 200, headers: list[tuple[str, str]] | None = None) -> None:
    req.send(status, orjson.dumps(body), headers=[("cache-control", "no-store"), *(headers or [])])


async def in_db(rt: Runtime, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a synchronous storage function (shared with the CLI) on its own connection, off the loop."""

    def run() -> T:
        conn = database.connect_sync(rt.config.database.path)
        try:
            return fn(conn, *args, **kwargs)
        finally:
            conn.close()

    return await asyncio.to_thread(run)


def cost_string(micro: int) -> str:
    return format_cost(Decimal(micro) / 1_000_000)
