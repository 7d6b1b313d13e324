"""`ensemble customers create|update|list`: customers and their budgets in the local database
(see docs/budgets.md). Running servers apply a change within a second (they poll the table)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

import orjson

from ensemble.budget.period import PERIODS
from ensemble.budget.view import parse_usd
from ensemble.errors import InvalidRequest
from ensemble.storage import customers as store
from ensemble.storage import database
from ensemble.storage.customers import Customer
from ensemble.storage.keys import budget_usd

EXIT_USAGE = 2


def budget_arg(value: str | None, flag: str = "--budget") -> int | None:
    """--budget USD as micro-dollars ("none": no budget); raises InvalidRequest naming the flag."""
    if value is None or value.lower() == "none":
        return None
    return parse_usd(value, flag)


def add_budget_flags(p: argparse.ArgumentParser, *, default_period: str | None = "month") -> None:
    p.add_argument(
        "--budget", metavar="USD", help='spend ceiling in US dollars per period ("none": no budget)'
    )
    p.add_argument(
        "--budget-period", choices=PERIODS, default=default_period, help="UTC period the budget resets on"
    )


def _print(customers: list[Customer], as_json: bool) -> None:
    if as_json:
        print(orjson.dumps([c.as_json() for c in customers]).decode())
        return
    print(f"{'CUSTOMER ID':<22} {'BUDGET':>12} {'PERIOD':<7} {'NAME':<24} EMAIL")
    for c in customers:
        budget = budget_usd(c.budget_micro) or "-"
        print(f"{c.customer_id:<22} {budget:>12} {c.budget_period:<7} {c.name[:24]:<24} {c.email}")


# The CLI's config loading and migration, handed in by cli.py (which imports this module).
Setup = tuple[Callable[[str], Any], Callable[[Any], object]]


def _with_db(args: argparse.Namespace, setup: Setup, work: Callable[[Any], int]) -> int:
    load, migrate = setup
    config = load(args.config)
    migrate(config)
    conn = database.connect_sync(config.database.path)
    try:
        return work(conn)
    except InvalidRequest as e:
        print(f"ensemble: {e.message}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        conn.close()


def cmd_create(args: argparse.Namespace, setup: Setup) -> int:
    def work(conn: Any) -> int:
        c = store.create(
            conn,
            name=args.name,
            email=args.email or "",
            budget_micro=budget_arg(args.budget),
            period=args.budget_period,
        )
        print(c.customer_id)
        return 0

    return _with_db(args, setup, work)


def cmd_update(args: argparse.Namespace, setup: Setup) -> int:
    def work(conn: Any) -> int:
        c = store.update(
            conn,
            args.customer_id,
            name=args.name,
            email=args.email,
            budget_micro="keep" if args.budget is None else budget_arg(args.budget),
            period=args.budget_period,
        )
        if c is None:
            print(f"ensemble: no customer with id {args.customer_id!r}", file=sys.stderr)
            return 1
        _print([c], args.json)
        return 0

    return _with_db(args, setup, work)


def cmd_list(args: argparse.Namespace, setup: Setup) -> int:
    def work(conn: Any) -> int:
        customers, _ = store.page(conn, 1_000_000, 0)
        _print(customers, args.json)
        return 0

    return _with_db(args, setup, work)


def add_parser(
    sub: Any, with_config: Callable[[argparse.ArgumentParser], argparse.ArgumentParser], setup: Setup
) -> None:
    p = sub.add_parser("customers", help="manage customers and their budgets in the local database")
    csub = p.add_subparsers(dest="customers_command", required=True, metavar="SUBCOMMAND")
    create = with_config(csub.add_parser("create", help="create a customer and print its id"))
    create.add_argument("--name", required=True)
    create.add_argument("--email")
    add_budget_flags(create)
    create.set_defaults(func=lambda args: cmd_create(args, setup))
    update = with_config(csub.add_parser("update", help="change a customer's name, email or budget"))
    update.add_argument("customer_id", metavar="ID")
    update.add_argument("--name")
    update.add_argument("--email")
    add_budget_flags(update, default_period=None)
    update.add_argument("--json", action="store_true", help="print JSON")
    update.set_defaults(func=lambda args: cmd_update(args, setup))
    lst = with_config(csub.add_parser("list", help="list customers with their budgets"))
    lst.add_argument("--json", action="store_true", help="print JSON")
    lst.set_defaults(func=lambda args: cmd_list(args, setup))
