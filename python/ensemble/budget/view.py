"""Budget fields as the admin API and the CLI show them, and parsing the dollars a client sends."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from ensemble.budget.ledger import Budgets, usd
from ensemble.budget.period import PERIODS, bounds, first_day, iso
from ensemble.errors import InvalidRequest

MAX_BUDGET_MICRO = 10**18  # a billion billion micro-dollars: beyond any real budget, inside SQLite's INTEGER


def parse_usd(value: str | None, field: str = "budget_usd") -> int | None:
    """A decimal string of dollars ("25", "0.50") as micro-dollars; None stays None (no budget)."""
    if value is None:
        return None
    try:
        amount = Decimal(value.strip())
    except InvalidOperation:
        raise InvalidRequest(
            f'{field}: expected a decimal string of US dollars, like "25.00"', param=field
        ) from None
    if not amount.is_finite() or amount < 0:
        raise InvalidRequest(f"{field}: must be a non-negative amount of US dollars", param=field)
    micro = amount * 1_000_000
    if micro != micro.to_integral_value():
        raise InvalidRequest(f"{field}: at most 6 decimal places (micro-dollars)", param=field)
    if micro > MAX_BUDGET_MICRO:
        raise InvalidRequest(f"{field}: too large", param=field)
    return int(micro)


def check_period(value: str | None, field: str = "budget_period") -> str | None:
    if value is not None and value not in PERIODS:
        raise InvalidRequest(f"{field}: expected one of {', '.join(PERIODS)}", param=field)
    return value


def first_day_of(period: str, now: float) -> str:
    return first_day(bounds(period, now)[0])


def budget_fields(
    budgets: Budgets, kind: str, owner: str, limit: int | None, period: str, durable_spent: int | None
) -> dict[str, Any]:
    """`spent_usd` (this period), `remaining_usd` and `budget_resets_at`, from this process's account
    (which knows other instances' spend through Redis) and the durable spend."""
    acc = budgets.get(kind, owner)
    if acc is not None and limit is not None:
        # This process's count includes what it settled but has not written yet; the database,
        # what other workers of this instance wrote: the larger is the better estimate.
        spent, resets = max(acc.spent, durable_spent or 0), acc.resets
    else:
        spent, resets = durable_spent or 0, bounds(period, budgets.clock())[1]
    out: dict[str, Any] = {"spent_usd": usd(spent), "budget_resets_at": iso(resets)}
    if limit is not None:
        in_flight = acc.reserved + max(0, acc.held) if acc is not None else 0
        out["remaining_usd"] = usd(max(0, limit - spent - in_flight))
    return out
