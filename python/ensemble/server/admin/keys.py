"""`/admin/keys`: create, list, configure, disable and revoke client API keys (see docs/admin-api.md)."""

from __future__ import annotations

import logging
from typing import Annotated, Literal, TypeVar

import msgspec

from ensemble.errors import InvalidRequest, NotFound
from ensemble.server.admin.common import Body, body_as, in_db, page, path_id, query, send
from ensemble.server.http import Request
from ensemble.server.routes import Route
from ensemble.server.runtime import Runtime
from ensemble.storage import keys
from ensemble.storage.keys import KeyRecord

log = logging.getLogger("ensemble.admin")

T = TypeVar("T")

Limit = Annotated[int, msgspec.Meta(ge=0, le=1_000_000_000)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Text = Annotated[str, msgspec.Meta(max_length=200)]
Models = Annotated[
    list[Annotated[str, msgspec.Meta(min_length=1, max_length=200)]], msgspec.Meta(max_length=1000)
]


class CreateKey(Body):
    name: Name
    customer_id: Text = ""
    rate_limit_rpm: Limit | None = None  # 0 or absent: the config's rate_limit.default_rpm
    rate_limit_tpm: Limit | None = None
    allowed_models: Models = msgspec.field(default_factory=list)


class UpdateKey(Body):
    name: Name | msgspec.UnsetType = msgspec.UNSET
    customer_id: Text | msgspec.UnsetType = msgspec.UNSET
    rate_limit_rpm: Limit | msgspec.UnsetType = msgspec.UNSET
    rate_limit_tpm: Limit | msgspec.UnsetType = msgspec.UNSET
    allowed_models: Models | msgspec.UnsetType = msgspec.UNSET


class SetStatus(Body):
    status: Literal["active", "disabled"]


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


async def existing_key(rt: Runtime, key_id: str) -> KeyRecord:
    record = await in_db(rt, keys.get_key, key_id)
    if record is None:
        raise NotFound(f"no API key with id {key_id!r}", code="key_not_found")
    return record


async def create_key(rt: Runtime, req: Request) -> None:
    body = await body_as(req, CreateKey)
    key, record = await in_db(
        rt,
        keys.create_key,
        name=body.name,
        customer_id=body.customer_id,
        rpm=body.rate_limit_rpm or 0,
        tpm=body.rate_limit_tpm or 0,
        models=body.allowed_models,
    )
    warning = await share_key(rt, record.key_id)
    log.info("admin created API key %s (%s)", record.key_id, record.prefix)
    send(req, {"key": key, "key_id": record.key_id, "prefix": record.prefix}, 201, warning)


async def list_keys(rt: Runtime, req: Request) -> None:
    limit, offset = page(query(req, ("limit", "offset")))
    records, total = await in_db(rt, keys.page_keys, limit, offset)
    send(req, {"keys": [r.as_json() for r in records], "total": total})


async def get_key_config(rt: Runtime, req: Request) -> None:
    send(req, (await existing_key(rt, path_id(req, "key_id"))).as_json())


async def put_key_config(rt: Runtime, req: Request) -> None:
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
    )
    if record is None:
        raise NotFound(f"no API key with id {key_id!r}", code="key_not_found")
    send(req, record.as_json(), headers=await share_key(rt, key_id))


async def set_key_status(rt: Runtime, req: Request) -> None:
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
    send(req, (await existing_key(rt, key_id)).as_json(), headers=warning)


async def revoke_key(rt: Runtime, req: Request) -> None:
    key_id = path_id(req, "key_id")
    await existing_key(rt, key_id)
    await in_db(rt, keys.set_status, key_id, "revoked")
    warning = await share_key(rt, key_id)
    log.info("admin revoked API key %s", key_id)
    send(req, (await existing_key(rt, key_id)).as_json(), headers=warning)


ROUTES = [
    Route("POST", "/admin/keys", create_key, family="admin", auth="admin"),
    Route("GET", "/admin/keys", list_keys, family="admin", auth="admin"),
    Route("GET", "/admin/keys/{key_id}/config", get_key_config, family="admin", auth="admin"),
    Route("PUT", "/admin/keys/{key_id}/config", put_key_config, family="admin", auth="admin"),
    Route("POST", "/admin/keys/{key_id}/status", set_key_status, family="admin", auth="admin"),
    Route("POST", "/admin/keys/{key_id}/revoke", revoke_key, family="admin", auth="admin"),
]
