"""The admin API (see docs/admin-api.md): keys, customers, usage, request logs, provider credentials,
status, one module per resource; common.py holds what they share, storage/ the SQL.

Every route is `auth="admin"`: the dispatcher asks for `Authorization: Bearer $ENSEMBLE_ADMIN_KEY`
before the handler runs (server/access.py); with the variable unset the whole API answers 503. Errors
are JSON in the native shape. Writes go to SQLite and are applied by this worker at once and by every
other worker or instance within a second (they poll the tables).
"""

from __future__ import annotations

from ensemble.server.admin import credentials, customers, keys, request_logs, status, usage
from ensemble.server.routes import Route

ROUTES: list[Route] = (
    keys.ROUTES + usage.ROUTES + customers.ROUTES + credentials.ROUTES + status.ROUTES + request_logs.ROUTES
)
