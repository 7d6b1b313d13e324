"""`/admin/customers`: the accounts keys are grouped under (see docs/admin-api.md)."""

from __future__ import annotations

import uuid
from typing import Annotated

import msgspec

from ensemble.errors import InvalidRequest
from ensemble.server.admin.common import Body, body_as, page, query, send
from ensemble.server.admin.keys import Name
from ensemble.server.http import Request
from ensemble.server.routes import Route
from ensemble.server.runtime import Runtime
from ensemble.storage import customers
from ensemble.storage.customers import Customer
from ensemble.storage.keys import now_iso


class CreateCustomer(Body):
    name: Name
    email: Annotated[str, msgspec.Meta(max_length=320)] = ""


async def create_customer(rt: Runtime, req: Request) -> None:
    body = await body_as(req, CreateCustomer)
    if body.email and ("@" not in body.email or any(c.isspace() for c in body.email)):
        raise InvalidRequest("email: not an email address", code="invalid_field", param="email")
    customer = Customer("cus_" + uuid.uuid4().hex[:16], body.name, body.email, now_iso())
    assert rt.db is not None
    await customers.insert(rt.db, customer)
    send(req, customer.as_json(), 201)


async def list_customers(rt: Runtime, req: Request) -> None:
    limit, offset = page(query(req, ("limit", "offset")))
    assert rt.db is not None
    found, total = await customers.page(rt.db, limit, offset)
    send(req, {"customers": [c.as_json() for c in found], "total": total})


ROUTES = [
    Route("POST", "/admin/customers", create_customer, family="admin", auth="admin"),
    Route("GET", "/admin/customers", list_customers, family="admin", auth="admin"),
]
