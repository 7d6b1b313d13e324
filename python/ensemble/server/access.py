"""Who may call a route. Each entry of the route table names its mode and the dispatcher checks it
before the handler runs, so no handler can forget (see docs/security.md):

- "none": anyone (health checks, the dashboard's static files: the page asks for the admin key).
- "client": a client API key, from whichever header the caller's SDK uses (`Authorization: Bearer`,
  `x-api-key`, `x-goog-api-key`; on Gemini routes also `?key=`, as Google's REST examples send it).
  The key's record is then `req.client`.
- "admin": `Authorization: Bearer $ENSEMBLE_ADMIN_KEY`, compared in constant time (digests of both
  sides, so not even the length leaks); with the variable unset every admin route answers 503.

Errors are rendered in the route family's own shape, like every other error of that route.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Literal
from urllib.parse import parse_qs

from ensemble._native import constant_time_eq, sha256_digest
from ensemble.auth import presented_key
from ensemble.errors import AuthenticationFailed, Overloaded
from ensemble.server.http import Request

if TYPE_CHECKING:
    from ensemble.auth import Authenticator

Auth = Literal["none", "client", "admin"]

ADMIN_KEY_ENV = "ENSEMBLE_ADMIN_KEY"


def check(auth: Auth, authenticator: Authenticator, req: Request) -> None:
    """Refuse the request unless it carries what `auth` asks for (AuthenticationFailed / Overloaded)."""
    if auth == "client":
        req.client = authenticator.authenticate(client_key(req))
    elif auth == "admin":
        require_admin(req)


def client_key(req: Request) -> str | None:
    presented = presented_key(req.headers)
    if presented is None and req.family == "gemini":
        values = parse_qs(req.scope.query_string or "").get("key")
        presented = values[0] if values else None
    return presented


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
