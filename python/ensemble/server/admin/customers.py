"""`/admin/customers`: the accounts keys are grouped under, with their budgets (see docs/admin-api.md
and docs/budgets.md)."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from ensemble.budget.period import Period
from ensemble.budget.view import budget_fields, first_day_of, parse_usd
from ensemble.errors import InvalidRequest, NotFound
from ensemble.server.admin.common import Body, body_as, in_db, page, path_id, query, send
from ensemble.server.admin.keys import Name, Usd
from ensemble.server.http import Request
from ensemble.server.routes import Route
from ensemble.server.runtime import Runtime
from ensemble.storage import customers, usage_daily
from ensemble.storage.customers import Customer

Email = Annotated[str, msgspec.Meta(max_length=320)]


class CreateCustomer(Body):
    name: Name
    email: Email = ""
    budget_usd: Usd | None = None  # absent or null: no budget
    budget_period: Period = "month"


class UpdateCustomer(Body):
    name: Name | msgspec.UnsetType = msgspec.UNSET
    email: Email | msgspec.UnsetType = msgspec.UNSET
    budget_usd: Usd | msgspec.UnsetType | None = msgspec.UNSET  # null removes the budget
    budget_period: Period | msgspec.UnsetType = msgspec.UNSET


def _check_email(email: str) -> None:
    if email and ("@" not in email or any(c.isspace() for c in email)):
        raise InvalidRequest("email: not an email address", code="invalid_field", param="email")


async def customer_views(rt: Runtime, found: list[Customer]) -> list[dict[str, Any]]:
    """Customer records with their budget state (`spent_usd` this period by all their keys)."""
    now = rt.budgets.clock()

    def spent(conn: Any) -> list[int]:
        return [
            usage_daily.customer_spent_sync(conn, c.customer_id, first_day_of(c.budget_period, now))
            for c in found
        ]

    durable = await in_db(rt, spent)
    return [
        {
            **c.as_json(),
            **budget_fields(rt.budgets, "customer", c.customer_id, c.budget_micro, c.budget_period, d),
        }
        for c, d in zip(found, durable, strict=True)
    ]


async def _changed(rt: Runtime, customer: Customer) -> dict[str, Any]:
    """Apply the change to this worker's budgets at once (other workers poll within a second)."""
    assert rt.db is not None
    await rt.budget_loader.sync_customers(rt.db)
    return (await customer_views(rt, [customer]))[0]


async def create_customer(rt: Runtime, req: Request) -> None:
    body = await body_as(req, CreateCustomer)
    _check_email(body.email)
    customer = await in_db(
        rt,
        customers.create,
        name=body.name,
        email=body.email,
        budget_micro=parse_usd(body.budget_usd),
        period=body.budget_period,
    )
    send(req, await _changed(rt, customer), 201)


async def update_customer(rt: Runtime, req: Request) -> None:
    customer_id = path_id(req, "customer_id")
    body = await body_as(req, UpdateCustomer)
    if not isinstance(body.email, msgspec.UnsetType):
        _check_email(body.email)
    customer = await in_db(
        rt,
        customers.update,
        customer_id,
        name=None if isinstance(body.name, msgspec.UnsetType) else body.name,
        email=None if isinstance(body.email, msgspec.UnsetType) else body.email,
        budget_micro="keep" if isinstance(body.budget_usd, msgspec.UnsetType) else parse_usd(body.budget_usd),
        period=None if isinstance(body.budget_period, msgspec.UnsetType) else body.budget_period,
    )
    if customer is None:
        raise NotFound(f"no customer with id {customer_id!r}", code="customer_not_found")
    send(req, await _changed(rt, customer))


async def get_customer(rt: Runtime, req: Request) -> None:
    customer_id = path_id(req, "customer_id")
    customer = await in_db(rt, customers.get, customer_id)
    if customer is None:
        raise NotFound(f"no customer with id {customer_id!r}", code="customer_not_found")
    send(req, (await customer_views(rt, [customer]))[0])


async def list_customers(rt: Runtime, req: Request) -> None:
    limit, offset = page(query(req, ("limit", "offset")))
    found, total = await in_db(rt, customers.page, limit, offset)
    send(req, {"customers": await customer_views(rt, found), "total": total})


ROUTES = [
    Route("POST", "/admin/customers", create_customer, family="admin", auth="admin"),
    Route("GET", "/admin/customers", list_customers, family="admin", auth="admin"),
    Route("GET", "/admin/customers/{customer_id}", get_customer, family="admin", auth="admin"),
    Route("PUT", "/admin/customers/{customer_id}", update_customer, family="admin", auth="admin"),
]
