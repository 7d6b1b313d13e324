"""`/admin/endpoints/{endpoint_id}/credential`: provider credentials stored encrypted (see docs/admin-api.md)."""

from __future__ import annotations

import logging
import re
from typing import Any

from ensemble import logs
from ensemble.errors import InvalidRequest, NotFound, Overloaded
from ensemble.server.admin.common import Body, body_as, path_id, send
from ensemble.server.http import Request
from ensemble.server.routes import Route
from ensemble.server.runtime import Runtime
from ensemble.storage import credentials

log = logging.getLogger("ensemble.admin")

_API_KEY = re.compile(r"[\x21-\x7e]{1,4096}")  # printable ASCII, no spaces: it goes into a header


class PutCredential(Body):
    api_key: str


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
    endpoint_id, provider = _endpoint(rt, req)
    send(req, await _credential_view(rt, endpoint_id, provider))


async def put_credential(rt: Runtime, req: Request) -> None:
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
    endpoint_id, provider = _endpoint(rt, req)
    assert rt.db is not None
    if not await credentials.delete(rt.db, endpoint_id):
        raise NotFound(f"no stored credential for endpoint {endpoint_id!r}", code="credential_not_found")
    await rt.sync_credentials()
    log.info("admin deleted the stored credential of endpoint %s", endpoint_id)
    send(req, {"deleted": True, **await _credential_view(rt, endpoint_id, provider)})


ROUTES = [
    Route("PUT", "/admin/endpoints/{endpoint_id}/credential", put_credential, family="admin", auth="admin"),
    Route("GET", "/admin/endpoints/{endpoint_id}/credential", get_credential, family="admin", auth="admin"),
    Route(
        "DELETE", "/admin/endpoints/{endpoint_id}/credential", delete_credential, family="admin", auth="admin"
    ),
]
