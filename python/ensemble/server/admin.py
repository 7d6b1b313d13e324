"""The admin API (see docs/admin-api.md): keys, customers, usage, request logs, provider credentials, status.

Every route needs `Authorization: Bearer $ENSEMBLE_ADMIN_KEY`, compared in constant time (digests of
both sides, so not even the length leaks); with the variable unset the whole API answers 503. Errors
are JSON in the native shape. Writes go to SQLite and are applied by this worker at once and by every
other worker or instance within a second (they poll the tables).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import parse_qsl, urlsplit

import msgspec
import orjson

from ensemble import logs
from ensemble._native import constant_time_eq, sha256_digest
from ensemble.api.common import convert, decode_object
from ensemble.budget.period import Period
from ensemble.budget.view import budget_fields, first_day_of, parse_usd
from ensemble.errors import AuthenticationFailed, InvalidRequest, NotFound, Overloaded
from ensemble.server.http import Request
from ensemble.server.routes import Route
from ensemble.server.runtime import Runtime
from ensemble.storage import budgets as budgets_store
from ensemble.storage import credentials, database, keys
from ensemble.storage.keys import KeyRecord, now_iso
from ensemble.usage.pricing import format_cost

log = logging.getLogger("ensemble.admin")

ADMIN_KEY_ENV = "ENSEMBLE_ADMIN_KEY"
MAX_BODY = 64 * 1024  # admin bodies are small; anything bigger is a mistake or an attack
DEFAULT_PAGE = 50
MAX_PAGE = 1000
PROBE_TTL_S = 10.0  # reachability probes are cached this long per endpoint
PROBE_TIMEOUT_S = 1.0

_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
_API_KEY = re.compile(r"[\x21-\x7e]{1,4096}")  # printable ASCII, no spaces: it goes into a header
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")

T = TypeVar("T")

Limit = Annotated[int, msgspec.Meta(ge=0, le=1_000_000_000)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Text = Annotated[str, msgspec.Meta(max_length=200)]
Models = Annotated[
    list[Annotated[str, msgspec.Meta(min_length=1, max_length=200)]], msgspec.Meta(max_length=1000)
]


# -- request bodies ------------------------------------------------------------------------------


class _Body(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


Usd = Annotated[str, msgspec.Meta(max_length=40)]


class CreateKey(_Body):
    name: Name
    customer_id: Text = ""
    rate_limit_rpm: Limit | None = None  # 0 or absent: the config's rate_limit.default_rpm
    rate_limit_tpm: Limit | None = None
    allowed_models: Models = msgspec.field(default_factory=list)
    budget_usd: Usd | None = None  # decimal string; absent or null: no budget
    budget_period: Period = "month"


class UpdateKey(_Body):
    name: Name | msgspec.UnsetType = msgspec.UNSET
    customer_id: Text | msgspec.UnsetType = msgspec.UNSET
    rate_limit_rpm: Limit | msgspec.UnsetType = msgspec.UNSET
    rate_limit_tpm: Limit | msgspec.UnsetType = msgspec.UNSET
    allowed_models: Models | msgspec.UnsetType = msgspec.UNSET
    budget_usd: Usd | msgspec.UnsetType | None = msgspec.UNSET  # null removes the budget
    budget_period: Period | msgspec.UnsetType = msgspec.UNSET


class SetStatus(_Body):
    status: Literal["active", "disabled"]


Email = Annotated[str, msgspec.Meta(max_length=320)]


class CreateCustomer(_Body):
    name: Name
    email: Email = ""
    budget_usd: Usd | None = None
    budget_period: Period = "month"


class UpdateCustomer(_Body):
    name: Name | msgspec.UnsetType = msgspec.UNSET
    email: Email | msgspec.UnsetType = msgspec.UNSET
    budget_usd: Usd | msgspec.UnsetType | None = msgspec.UNSET
    budget_period: Period | msgspec.UnsetType = msgspec.UNSET


class PutCredential(_Body):
    api_key: str


# -- helpers -------------------------------------------------------------------------------------


def require_admin(req: Request) -> None:
    expected = os.environ.get(ADMIN_KEY_ENV, "")
    if not expected:
        raise Overloaded(
            f"the admin API is disabled: set {ADMIN_KEY_ENV} to enable it", code="admin_disabled"
        )
    auth = req.header("authorization") or ""
    scheme, _, presented = auth.partition(" ")
    presented = presented.strip()
    if scheme.lower() != "bearer" or not presented:
        raise AuthenticationFailed(
            "missing admin key: send 'Authorization: Bearer <ENSEMBLE_ADMIN_KEY>'", code="missing_admin_key"
        )
    # Digests have equal length, so the comparison time says nothing about the expected key.
    if not constant_time_eq(sha256_digest(presented), sha256_digest(expected)):
        raise AuthenticationFailed("invalid admin key", code="invalid_admin_key")


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


async def share_key(rt: Runtime, key_id: str) -> list[tuple[str, str]]:
    """Apply a key change here at once and publish it to other instances (Redis, when configured;
    without it they share this SQLite file and poll it). Returns headers for the response: a warning
    when the change is saved but could not be published."""
    await rt.sync_keys()
    found = await in_db(rt, keys.get_key_and_digest, key_id)
    publish = getattr(getattr(rt, "scaleout", None), "publish_key", None)
    if found is None or not callable(publish):
        return []
    if await publish(*found):
        return []
    log.warning("key change %s saved locally but not published: Redis is unreachable", key_id)
    return [("warning", '199 ensemble "saved; not yet shared with other instances (Redis unreachable)"')]


async def in_db(rt: Runtime, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a synchronous storage function (shared with the CLI) on its own connection, off the loop."""

    def run() -> T:
        conn = database.connect_sync(rt.config.database.path)
        try:
            return fn(conn, *args, **kwargs)
        finally:
            conn.close()

    return await asyncio.to_thread(run)


async def existing_key(rt: Runtime, key_id: str) -> KeyRecord:
    record = await in_db(rt, keys.get_key, key_id)
    if record is None:
        raise NotFound(f"no API key with id {key_id!r}", code="key_not_found")
    return record


def cost_string(micro: int) -> str:
    return format_cost(Decimal(micro) / 1_000_000)


# -- keys ----------------------------------------------------------------------------------------


async def create_key(rt: Runtime, req: Request) -> None:
    require_admin(req)
    body = await body_as(req, CreateKey)
    key, record = await in_db(
        rt,
        keys.create_key,
        name=body.name,
        customer_id=body.customer_id,
        rpm=body.rate_limit_rpm or 0,
        tpm=body.rate_limit_tpm or 0,
        models=body.allowed_models,
        budget_micro=parse_usd(body.budget_usd),
        budget_period=body.budget_period,
    )
    warning = await share_key(rt, record.key_id)
    log.info("admin created API key %s (%s)", record.key_id, record.prefix)
    send(req, {"key": key, "key_id": record.key_id, "prefix": record.prefix}, 201, warning)


async def list_keys(rt: Runtime, req: Request) -> None:
    require_admin(req)
    limit, offset = page(query(req, ("limit", "offset")))
    records, total = await in_db(rt, keys.page_keys, limit, offset)
    send(req, {"keys": await key_views(rt, records), "total": total})


async def key_views(rt: Runtime, records: list[KeyRecord]) -> list[dict[str, Any]]:
    """Key records with their budget state (`spent_usd` this period, `budget_resets_at`)."""
    now = rt.budgets.clock()

    def spent(conn: Any) -> list[int]:
        return [
            budgets_store.key_spent_sync(conn, r.key_id, first_day_of(r.budget_period, now)) for r in records
        ]

    durable = await in_db(rt, spent)
    return [
        {
            **r.as_json(),
            **budget_fields(rt.budgets, "key", r.key_id, r.budget_micro, r.budget_period, d),
        }
        for r, d in zip(records, durable, strict=True)
    ]


async def key_view(rt: Runtime, record: KeyRecord) -> dict[str, Any]:
    return (await key_views(rt, [record]))[0]


async def get_key_config(rt: Runtime, req: Request) -> None:
    require_admin(req)
    send(req, await key_view(rt, await existing_key(rt, path_id(req, "key_id"))))


async def put_key_config(rt: Runtime, req: Request) -> None:
    require_admin(req)
    key_id = path_id(req, "key_id")
    body = await body_as(req, UpdateKey)

    def given(value: T | msgspec.UnsetType) -> T | None:
        return None if isinstance(value, msgspec.UnsetType) else value

    record = await in_db(
        rt,
        keys.update_config,
        key_id,
        name=given(body.name),
        customer_id=given(body.customer_id),
        rpm=given(body.rate_limit_rpm),
        tpm=given(body.rate_limit_tpm),
        models=given(body.allowed_models),
        budget_micro="keep" if isinstance(body.budget_usd, msgspec.UnsetType) else parse_usd(body.budget_usd),
        budget_period=given(body.budget_period),
    )
    if record is None:
        raise NotFound(f"no API key with id {key_id!r}", code="key_not_found")
    headers = await share_key(rt, key_id)
    send(req, await key_view(rt, record), headers=headers)


async def set_key_status(rt: Runtime, req: Request) -> None:
    require_admin(req)
    key_id = path_id(req, "key_id")
    body = await body_as(req, SetStatus)
    record = await existing_key(rt, key_id)
    if record.status == "revoked":
        raise InvalidRequest(
            f"key {key_id!r} is revoked; a revoked key cannot be re-enabled, create a new one",
            code="key_revoked",
            param="status",
        )
    await in_db(rt, keys.set_status, key_id, body.status)
    warning = await share_key(rt, key_id)
    send(req, await key_view(rt, await existing_key(rt, key_id)), headers=warning)


async def revoke_key(rt: Runtime, req: Request) -> None:
    require_admin(req)
    key_id = path_id(req, "key_id")
    await existing_key(rt, key_id)
    await in_db(rt, keys.set_status, key_id, "revoked")
    warning = await share_key(rt, key_id)
    log.info("admin revoked API key %s", key_id)
    send(req, await key_view(rt, await existing_key(rt, key_id)), headers=warning)


# -- usage -----------------------------------------------------------------------------------------

_USAGE_COLUMNS = (
    "requests",
    "errors",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "cache_creation_tokens",
    "reasoning_tokens",
    "cost_micro_dollars",
)


def _empty_usage() -> dict[str, int]:
    return dict.fromkeys(_USAGE_COLUMNS, 0)


def _usage_json(u: dict[str, int]) -> dict[str, Any]:
    out: dict[str, Any] = {k: u[k] for k in _USAGE_COLUMNS if k != "cost_micro_dollars"}
    out["cost"] = cost_string(u["cost_micro_dollars"])
    out["cost_micro_dollars"] = u["cost_micro_dollars"]
    return out


def day_param(params: dict[str, str], name: str) -> str | None:
    value = params.get(name)
    if value is None:
        return None
    if not _DAY.fullmatch(value):
        raise InvalidRequest(f"{name}: expected a date YYYY-MM-DD", code="invalid_query", param=name)
    try:
        datetime.strptime(value, "%Y-%m-%d")
    except ValueError:
        raise InvalidRequest(f"{name}: not a calendar date", code="invalid_query", param=name) from None
    return value


async def key_usage(rt: Runtime, req: Request) -> None:
    require_admin(req)
    key_id = path_id(req, "key_id")
    params = query(req, ("since", "until"))
    since, until = day_param(params, "since"), day_param(params, "until")
    record = await existing_key(rt, key_id)
    assert rt.db is not None and rt.request_log is not None
    await rt.request_log.flush()  # this worker's buffered records count too
    view = await key_view(rt, record)
    budget_view = {
        k: view.get(k) for k in ("budget_usd", "budget_period", "spent_usd", "remaining_usd", "budget_resets_at")
    }
    sql = f"SELECT day, model, {', '.join(_USAGE_COLUMNS)} FROM usage_daily WHERE key_id = ?"
    args: list[Any] = [key_id]
    if since:
        sql += " AND day >= ?"
        args.append(since)
    if until:
        sql += " AND day <= ?"
        args.append(until)
    async with rt.db.execute(sql + " ORDER BY day, model", args) as cur:
        rows = await cur.fetchall()
    totals = _empty_usage()
    by_model: dict[str, dict[str, int]] = {}
    by_day: dict[str, dict[str, int]] = {}
    by_week: dict[str, dict[str, int]] = {}
    by_month: dict[str, dict[str, int]] = {}
    for row in rows:
        day, model, values = str(row[0]), str(row[1]), [int(v) for v in row[2:]]
        for bucket in (
            totals,
            by_model.setdefault(model, _empty_usage()),
            by_day.setdefault(day, _empty_usage()),
            by_week.setdefault(iso_week(day), _empty_usage()),
            by_month.setdefault(day[:7], _empty_usage()),
        ):
            for name, value in zip(_USAGE_COLUMNS, values, strict=True):
                bucket[name] += value
    send(
        req,
        {
            "key_id": key_id,
            "totals": _usage_json(totals),
            "by_model": {m: _usage_json(u) for m, u in by_model.items()},
            "by_day": {d: _usage_json(u) for d, u in by_day.items()},
            # The UTC periods budgets reset on (docs/budgets.md): ISO weeks from Monday, months.
            "by_week": {w: _usage_json(u) for w, u in by_week.items()},
            "by_month": {m: _usage_json(u) for m, u in by_month.items()},
            "budget": budget_view,
        },
    )


def iso_week(day: str) -> str:
    """`2026-12-02` -> `2026-W49` (the ISO year and week a budget's `week` period counts in)."""
    year, week, _ = datetime.strptime(day, "%Y-%m-%d").isocalendar()
    return f"{year}-W{week:02d}"


# -- customers -------------------------------------------------------------------------------------


def _check_email(email: str) -> None:
    if email and ("@" not in email or any(c.isspace() for c in email)):
        raise InvalidRequest("email: not an email address", code="invalid_field", param="email")


async def customer_views(rt: Runtime, customers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    now = rt.budgets.clock()

    def spent(conn: Any) -> list[int]:
        return [
            budgets_store.customer_spent_sync(conn, c["customer_id"], first_day_of(c["budget_period"], now))
            for c in customers
        ]

    durable = await in_db(rt, spent)
    return [
        {
            **c,
            **budget_fields(
                rt.budgets, "customer", c["customer_id"], parse_usd(c["budget_usd"]), c["budget_period"], d
            ),
        }
        for c, d in zip(customers, durable, strict=True)
    ]


async def _customer_changed(rt: Runtime, customer: dict[str, Any]) -> dict[str, Any]:
    """Apply the change to this worker's budgets at once (other workers poll within a second)."""
    assert rt.db is not None
    await rt.budget_loader.sync_customers(rt.db)
    return (await customer_views(rt, [customer]))[0]


async def create_customer(rt: Runtime, req: Request) -> None:
    require_admin(req)
    body = await body_as(req, CreateCustomer)
    _check_email(body.email)
    customer = await in_db(
        rt,
        budgets_store.create_customer,
        name=body.name,
        email=body.email,
        budget_micro=parse_usd(body.budget_usd),
        period=body.budget_period,
    )
    send(req, await _customer_changed(rt, customer), 201)


async def update_customer(rt: Runtime, req: Request) -> None:
    require_admin(req)
    customer_id = path_id(req, "customer_id")
    body = await body_as(req, UpdateCustomer)
    if not isinstance(body.email, msgspec.UnsetType):
        _check_email(body.email)
    customer = await in_db(
        rt,
        budgets_store.update_customer,
        customer_id,
        name=None if isinstance(body.name, msgspec.UnsetType) else body.name,
        email=None if isinstance(body.email, msgspec.UnsetType) else body.email,
        budget_micro="keep" if isinstance(body.budget_usd, msgspec.UnsetType) else parse_usd(body.budget_usd),
        period=None if isinstance(body.budget_period, msgspec.UnsetType) else body.budget_period,
    )
    if customer is None:
        raise NotFound(f"no customer with id {customer_id!r}", code="customer_not_found")
    send(req, await _customer_changed(rt, customer))


async def get_customer(rt: Runtime, req: Request) -> None:
    require_admin(req)
    customer_id = path_id(req, "customer_id")
    customer = await in_db(rt, budgets_store.get_customer, customer_id)
    if customer is None:
        raise NotFound(f"no customer with id {customer_id!r}", code="customer_not_found")
    send(req, (await customer_views(rt, [customer]))[0])


async def list_customers(rt: Runtime, req: Request) -> None:
    require_admin(req)
    limit, offset = page(query(req, ("limit", "offset")))
    customers, total = await in_db(rt, budgets_store.page_customers, limit, offset)
    send(req, {"customers": await customer_views(rt, customers), "total": total})


# -- request logs ----------------------------------------------------------------------------------


def _since(value: str) -> str:
    """An ISO-8601 date or timestamp as the UTC text form `created_at` is stored in."""
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidRequest(
            "since: expected an ISO-8601 date or timestamp (2025-01-31 or 2025-01-31T12:00:00Z)",
            code="invalid_query",
            param="since",
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def request_logs(rt: Runtime, req: Request) -> None:
    require_admin(req)
    params = query(req, ("limit", "offset", "model", "provider", "status", "since", "key_id"))
    limit, offset = page(params)
    where: list[str] = []
    args: list[Any] = []
    for name in ("model", "provider", "key_id"):
        if name in params:
            where.append(f"{name} = ?")
            args.append(params[name])
    if "status" in params:
        status = params["status"]
        if status in ("success", "error"):
            where.append("status = ?")
            args.append(status)
        elif status.isascii() and status.isdigit() and len(status) == 3:
            where.append("http_status = ?")
            args.append(int(status))
        else:
            raise InvalidRequest(
                "status: expected success, error or a 3-digit HTTP status",
                code="invalid_query",
                param="status",
            )
    if "since" in params:
        where.append("created_at >= ?")
        args.append(_since(params["since"]))
    clause = (" WHERE " + " AND ".join(where)) if where else ""
    assert rt.db is not None and rt.request_log is not None
    await rt.request_log.flush()
    async with rt.db.execute(f"SELECT count(*) FROM request_log{clause}", args) as cur:
        (total,) = await cur.fetchone() or (0,)
    async with rt.db.execute(
        "SELECT request_id, key_id, model, provider, endpoint_id, status, http_status, input_tokens, "
        "output_tokens, cached_tokens, cache_creation_tokens, reasoning_tokens, cost_micro_dollars, "
        "latency_ms, error, created_at, route_reason, cache_value_usd, cost_penalty_usd "
        f"FROM request_log{clause} ORDER BY created_at DESC, seq DESC LIMIT ? OFFSET ?",
        [*args, limit, offset],
    ) as cur:
        rows = await cur.fetchall()
    entries = [
        {
            "request_id": r[0],
            "key_id": r[1],
            "model": r[2],
            "provider": r[3],
            "endpoint_id": r[4],
            "status": r[5],
            "http_status": r[6],
            "input_tokens": r[7],
            "output_tokens": r[8],
            "cached_tokens": r[9],
            "cache_creation_tokens": r[10],
            "reasoning_tokens": r[11],
            "cost": cost_string(int(r[12])),
            "cost_micro_dollars": r[12],
            "latency_ms": r[13],
            "error": logs.redact(str(r[14])) or None,
            "created_at": r[15],
            # The routing decision: why this endpoint, and the estimated cache dollars involved.
            "route_reason": r[16],
            "cache_value_usd": r[17],
            "cost_penalty_usd": r[18],
        }
        for r in rows
    ]
    send(req, {"logs": entries, "total": int(total)})


# -- provider credentials --------------------------------------------------------------------------


def _endpoint(rt: Runtime, req: Request) -> tuple[str, str]:
    endpoint_id = path_id(req, "endpoint_id")
    for provider in rt.providers:
        for e in provider.endpoints:
            if e.id == endpoint_id:
                return endpoint_id, provider.name
    for pc in rt.config.providers:  # configured, but no adapter in this build
        for ec in pc.endpoints:
            if ec.id == endpoint_id:
                return endpoint_id, pc.name
    raise NotFound(
        f"no endpoint {endpoint_id!r} in the configuration (GET /admin/status lists them)",
        code="endpoint_not_found",
    )


async def _credential_view(rt: Runtime, endpoint_id: str, provider: str) -> dict[str, Any]:
    assert rt.db is not None
    stored = await credentials.get(rt.db, endpoint_id)
    source = rt.credential_source(endpoint_id)
    return {
        "endpoint_id": endpoint_id,
        "provider": provider,
        "stored": stored is not None,
        "hint": stored.hint if stored else None,
        "key_version": stored.key_version if stored else None,
        "updated_at": stored.updated_at if stored else None,
        "source": source,  # which credential requests use: config | stored | none
        "error": rt.credentials.errors.get(endpoint_id),
    }


async def get_credential(rt: Runtime, req: Request) -> None:
    require_admin(req)
    endpoint_id, provider = _endpoint(rt, req)
    send(req, await _credential_view(rt, endpoint_id, provider))


async def put_credential(rt: Runtime, req: Request) -> None:
    require_admin(req)
    endpoint_id, provider = _endpoint(rt, req)
    body = await body_as(req, PutCredential)
    if not _API_KEY.fullmatch(body.api_key):
        # Never echo the value: it is a secret even when malformed.
        raise InvalidRequest(
            "api_key: must be 1-4096 printable ASCII characters without spaces",
            code="invalid_field",
            param="api_key",
        )
    cipher = rt.credentials.cipher
    if cipher is None:
        raise Overloaded(
            "ENSEMBLE_ENCRYPTION_KEY is not set, so credentials cannot be stored", code="encryption_disabled"
        )
    logs.register_secret(body.api_key)
    assert rt.db is not None
    await credentials.put(rt.db, cipher, endpoint_id, body.api_key)
    await rt.sync_credentials()
    log.info("admin stored a credential for endpoint %s", endpoint_id)
    send(req, await _credential_view(rt, endpoint_id, provider))


async def delete_credential(rt: Runtime, req: Request) -> None:
    require_admin(req)
    endpoint_id, provider = _endpoint(rt, req)
    assert rt.db is not None
    if not await credentials.delete(rt.db, endpoint_id):
        raise NotFound(f"no stored credential for endpoint {endpoint_id!r}", code="credential_not_found")
    await rt.sync_credentials()
    log.info("admin deleted the stored credential of endpoint %s", endpoint_id)
    send(req, {"deleted": True, **await _credential_view(rt, endpoint_id, provider)})


# -- status ----------------------------------------------------------------------------------------

_probes: dict[str, tuple[float, dict[str, Any]]] = {}


async def probe(base_url: str) -> dict[str, Any]:
    """Can we open a TCP connection to the provider? Cheap, no credentials sent; cached briefly."""
    now = time.monotonic()
    cached = _probes.get(base_url)
    if cached and now - cached[0] < PROBE_TTL_S:
        return cached[1]
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    t0 = time.perf_counter()
    result: dict[str, Any]
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), PROBE_TIMEOUT_S)
        writer.close()
        result = {"state": "reachable", "connect_ms": round((time.perf_counter() - t0) * 1000, 3)}
    except (OSError, TimeoutError) as e:
        result = {"state": "unreachable", "error": type(e).__name__}
    result["checked_at"] = now_iso()
    _probes[base_url] = (now, result)
    return result


def _rate_limit_rows(rt: Runtime) -> dict[str, list[dict[str, Any]]]:
    """Per-endpoint rate-limit counters, when the admission layer keeps them (by endpoint id)."""
    endpoint_status = getattr(rt.admission, "endpoint_status", None)
    rows: dict[str, list[dict[str, Any]]] = {}
    if callable(endpoint_status):
        for row in endpoint_status():
            rows.setdefault(str(row.get("endpoint_id")), []).append(row)
    return rows


async def status(rt: Runtime, req: Request) -> None:
    require_admin(req)
    now = time.monotonic()
    limits = _rate_limit_rows(rt)
    router = rt.gateway.router if rt.gateway is not None else None
    providers: dict[str, Any] = {}
    probes: list[tuple[dict[str, Any], asyncio.Task[dict[str, Any]]]] = []
    for p in rt.providers:
        endpoints = []
        for e in p.endpoints:
            per_model = limits.get(e.id, [])
            entry: dict[str, Any] = {
                "id": e.id,
                "base_url": e.base_url if p.type != "mock" else None,
                "credential": rt.credential_source(e.id),
                "available": e.has_credential,
                "in_flight": e.in_flight,
                "cooling_down": e.cooling_down(now),
                "cooldown_remaining_s": round(max(e.cooldown_until - now, 0.0), 3),
                "rpm_limit": e.rpm_limit,
                "tpm_limit": e.tpm_limit,
                # The fullest of its per-model windows (RPM or TPM), 0..1; null when not tracked.
                "utilisation": max((float(r.get("utilisation") or 0.0) for r in per_model), default=None),
                "rate_limits": per_model,
                # Cached prompt tokens / prompt tokens as the provider reported them (this process).
                "prompt_cache": router.cache_hits.view(e.id) if router is not None else None,
            }
            if p.type == "mock":
                entry["reachability"] = {"state": "local"}
            else:
                task = asyncio.get_running_loop().create_task(probe(e.base_url))
                probes.append((entry, task))
            endpoints.append(entry)
        providers[p.name] = {"type": p.type, "health": p.health(), "endpoints": endpoints}
    for pc in rt.config.providers:
        providers.setdefault(
            pc.name,
            {"type": pc.type, "health": "unavailable", "endpoints": [], "note": "no adapter in this build"},
        )
    for entry, task in probes:
        entry["reachability"] = await task
    stats = getattr(getattr(rt.gateway, "router", None), "stats", None)
    affinity: dict[str, Any] = {"enabled": rt.config.cache.enable_session_affinity}
    affinity.update(stats() if callable(stats) else {"stats": "not reported by this router"})
    request_log = rt.request_log
    health = rt.provider_health()
    send(
        req,
        {
            "status": "healthy" if health and all(s == "healthy" for s in health.values()) else "degraded",
            "version": rt.version,
            "uptime": round(time.time() - rt.started_at, 3),
            "worker_pid": os.getpid(),
            "providers": providers,
            "affinity": affinity,
            **_backends(rt),
            "request_log": request_log.stats() if request_log is not None else None,
            "keys_loaded": len(rt.keys),
        },
    )


def _backends(rt: Runtime) -> dict[str, Any]:
    """Redis and S3 state from the scale-out layer when this build has one, else what the config says."""
    view = getattr(getattr(rt, "scaleout", None), "view", None)
    if callable(view):
        state: dict[str, Any] = view()
        return {"redis": state.get("redis"), "s3": state.get("s3")}

    def placeholder(configured: str) -> dict[str, Any]:
        if not configured:
            return {"configured": False, "state": "not configured"}
        return {"configured": True, "state": "configured, but not connected by this build"}

    return {
        "redis": placeholder(rt.config.redis.address),
        "s3": placeholder(rt.config.persistence.s3.bucket),
    }


ROUTES = [
    Route("POST", "/admin/keys", create_key, family="admin"),
    Route("GET", "/admin/keys", list_keys, family="admin"),
    Route("GET", "/admin/keys/{key_id}/config", get_key_config, family="admin"),
    Route("PUT", "/admin/keys/{key_id}/config", put_key_config, family="admin"),
    Route("GET", "/admin/keys/{key_id}/usage", key_usage, family="admin"),
    Route("POST", "/admin/keys/{key_id}/status", set_key_status, family="admin"),
    Route("POST", "/admin/keys/{key_id}/revoke", revoke_key, family="admin"),
    Route("POST", "/admin/customers", create_customer, family="admin"),
    Route("GET", "/admin/customers", list_customers, family="admin"),
    Route("GET", "/admin/customers/{customer_id}", get_customer, family="admin"),
    Route("PUT", "/admin/customers/{customer_id}", update_customer, family="admin"),
    Route("PUT", "/admin/endpoints/{endpoint_id}/credential", put_credential, family="admin"),
    Route("GET", "/admin/endpoints/{endpoint_id}/credential", get_credential, family="admin"),
    Route("DELETE", "/admin/endpoints/{endpoint_id}/credential", delete_credential, family="admin"),
    Route("GET", "/admin/status", status, family="admin"),
    Route("GET", "/admin/logs", request_logs, family="admin"),
]
