"""Budget accounts of one process: reserve the worst case, settle the real cost (see docs/budgets.md).

Money is integer micro-dollars. Each budgeted key and customer is an `Account`; a request holds a
reservation on its key's account and on its customer's, taken together or not at all, before any
upstream call. `available` is what this process may still reserve:

- without Redis, its share of what is left this period (all of it with one worker; 1/N with N
  workers, which share the SQLite file but not memory);
- with Redis, the lease the shared budget granted this instance (`budget/sync.py`); an instance
  never reserves past it, so N instances together never pass the ceiling, and during a Redis
  outage it spends only what it already holds.

A provider batch's reservation outlives the request that submitted it: `commit` turns it into a
*held* amount, kept in SQLite with the batch (`budget/holds.py`) and in Redis, and each item settles
its share wherever its result is collected. Settling a held amount is a refund of the worst case
less the real cost, which is safe in any process: what comes back was charged before.

Everything here is plain arithmetic on the event loop's thread: a reservation checks and takes
both accounts with no await in between, so concurrent requests cannot both pass one check.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal

from ensemble.budget.period import bounds, iso
from ensemble.errors import BudgetExceeded

log = logging.getLogger("ensemble.budget")


def usd(micro: int) -> str:
    """Micro-dollars as the decimal string the API shows ("0.25")."""
    text = format(Decimal(micro).scaleb(-6).normalize(), "f")
    return text if text != "-0" else "0"


@dataclass(slots=True, eq=False)
class Account:
    kind: str  # "key" | "customer"
    owner: str  # the key or customer id
    limit: int  # micro-dollars per period
    period: str
    starts: float  # epoch seconds: the current period began then
    resets: float | None  # epoch seconds; None: never (`total`)
    spent: int = 0  # this period, as far as this process knows (durable + settled here + others')
    reserved: int = 0  # reservations in flight in this process
    held: int = 0  # provider batches' reservations not settled yet (durable; see `commit`)
    available: int = 0  # what this process may still reserve (its share, or its Redis lease)
    shared: bool = False  # `available` is a lease from Redis
    pending: int = 0  # spend settled here and not yet pushed to Redis
    pending_held: int = 0  # held amounts committed (+) or settled (-) here, not yet pushed to Redis
    # This database's spend (and holds) of the period when the account was loaded: its share of the
    # shared spend in Redis, set once per database. None: not read yet (no Redis round until it is).
    seed: int | None = None
    floor: int = 0  # the shared total last seen in Redis: seeds it again should Redis lose it
    stale_reserved: int = 0  # reservations still in flight from a period that has ended
    lease_until: float = 0.0  # monotonic seconds; a lease is void after this
    exhausted_logged: bool = False

    @property
    def scope(self) -> str:
        return f"{self.kind}:{self.owner}"

    def remaining(self) -> int:
        """What is left this period for everyone (the limit less spend and reservations known here)."""
        return max(0, self.limit - self.spent - max(0, self.held) - self.reserved)


class Hold:
    """One request's reservation: the same amount on each of its accounts (`held`: a provider
    batch item's share of a committed reservation)."""

    __slots__ = ("accounts", "amount", "held", "starts")

    def __init__(
        self, accounts: tuple[Account, ...], amount: int, starts: tuple[float, ...], held: bool = False
    ) -> None:
        self.accounts = accounts
        self.amount = amount
        self.starts = starts  # the period each was reserved in (a reset between is not refunded)
        self.held = held


class Budgets:
    def __init__(
        self,
        *,
        share: int = 1,
        shared: bool = False,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.accounts: dict[str, Account] = {}
        self.share = max(1, share)  # processes splitting a budget without Redis (server.workers)
        self.shared = shared  # Redis configured: accounts are gated by leases from the start
        self.clock = clock
        self.monotonic = monotonic
        # Set by the Redis sync: `wake` asks for a refill soon, `refill` awaits one round trip.
        self.wake: Callable[[Account], None] = lambda account: None
        self.refill: Callable[[list[Account], int], Awaitable[None]] | None = None
        self.on_exhausted: Callable[[Account], None] | None = None

    # -- configuration (keys and customers as they load or change) --------------------------------

    def configure(
        self, kind: str, owner: str, limit: int | None, period: str, spent: int | None, held: int = 0
    ) -> None:
        """Set an account's budget; `spent` is the durable spend of the current period and `held`
        its provider batches' outstanding reservations (None: keep what this process knows). A None
        limit removes the budget."""
        scope = f"{kind}:{owner}"
        acc = self.accounts.get(scope)
        if limit is None:
            if acc is not None:
                del self.accounts[scope]
            return
        starts, resets = bounds(period, self.clock())
        if acc is None:
            acc = self.accounts[scope] = Account(
                kind, owner, limit, period, starts, resets, shared=self.shared
            )
        new_period = acc.period != period or acc.starts != starts
        acc.limit, acc.period, acc.starts, acc.resets = limit, period, starts, resets
        if new_period:
            acc.stale_reserved += acc.reserved
            acc.reserved = acc.held = acc.floor = 0
            acc.seed = None
            if acc.shared:
                acc.available, acc.lease_until, acc.pending, acc.pending_held = 0, 0.0, 0, 0
        if spent is not None:
            # Redis takes a database's seed once (budget/sync.py): a later read changes nothing there.
            acc.spent, acc.held, acc.seed = spent, held, spent + held
        elif new_period:
            acc.spent = 0
        if not acc.shared:
            acc.available = (limit - acc.spent - acc.held) // self.share - acc.reserved
        acc.exhausted_logged = False

    def get(self, kind: str, owner: str) -> Account | None:
        return self.accounts.get(f"{kind}:{owner}")

    # -- the request path ------------------------------------------------------------------------

    def accounts_for(self, key_id: str, customer_id: str) -> tuple[Account, ...]:
        key = self.accounts.get("key:" + key_id)
        customer = self.accounts.get("customer:" + customer_id) if customer_id else None
        if key is None:
            return (customer,) if customer is not None else ()
        return (key, customer) if customer is not None else (key,)

    def try_reserve(self, accounts: tuple[Account, ...], amount: int) -> Hold | Account:
        """Reserve `amount` on every account, or on none: returns the hold, or the account short of it."""
        now = self.clock()
        mono = self.monotonic() if self.shared else 0.0
        for acc in accounts:
            if acc.resets is not None and now >= acc.resets:
                self._roll(acc, now)
            if acc.available < amount or (acc.shared and mono >= acc.lease_until):
                return acc
        for acc in accounts:
            acc.available -= amount
            acc.reserved += amount
        return Hold(accounts, amount, tuple([a.starts for a in accounts]))

    async def reserve(self, accounts: tuple[Account, ...], amount: int, what: str = "this request") -> Hold:
        """`try_reserve`, and when a lease is short, one refill from Redis before refusing."""
        got = self.try_reserve(accounts, amount)
        if isinstance(got, Hold):
            return got
        if got.shared and self.refill is not None and amount <= got.limit - got.spent - max(0, got.held):
            await self.refill([a for a in accounts if a.shared], amount)
            got = self.try_reserve(accounts, amount)
            if isinstance(got, Hold):
                return got
        raise self.refusal(got, amount, what)

    def settle(self, hold: Hold, actual: int) -> None:
        """The request ended having cost `actual` micro-dollars (0: refused or failed, nothing charged).

        Spend never reserved (a budget set while the request ran) settles a hold of 0 (`unreserved`)."""
        amount = hold.amount
        refund = amount - actual
        for acc, starts in zip(hold.accounts, hold.starts, strict=True):
            if acc.starts != starts:
                if not hold.held:  # reserved in a period that has ended: charged to that one
                    acc.stale_reserved -= amount
                continue
            if hold.held:
                acc.held -= amount  # below 0 in a worker that did not commit it: a refund all the same
            else:
                acc.reserved -= amount
            acc.available += refund
            acc.spent += actual
            if acc.shared:
                acc.pending += actual
                if hold.held:
                    acc.pending_held -= amount
                if acc.available <= 0:
                    self.wake(acc)
        if refund < 0 and amount:
            log.warning(
                "request cost %s USD, more than the %s USD reserved for it (%s)",
                usd(actual),
                usd(amount),
                ", ".join(a.scope for a in hold.accounts),
            )

    @staticmethod
    def unreserved(accounts: tuple[Account, ...]) -> Hold:
        return Hold(accounts, 0, tuple(a.starts for a in accounts))

    def commit(self, hold: Hold) -> None:
        """A provider batch was accepted with this reservation (its items' holds are on disk): it is
        held until each item settles its own share (`held`), in whichever process collects it."""
        for acc, starts in zip(hold.accounts, hold.starts, strict=True):
            if acc.starts != starts:
                acc.stale_reserved -= hold.amount
                continue
            acc.reserved -= hold.amount
            acc.held += hold.amount
            if acc.shared:
                acc.pending_held += hold.amount
                self.wake(acc)  # in Redis at once: a crash must not leave it only on this disk

    def held_hold(self, scopes: list[str], amount: int, reserved_at: float) -> Hold:
        """One provider batch item's share of a committed reservation, on the budgets it was
        reserved on (`scopes`) that are still budgets here; it counts in the period it was made in."""
        accounts = tuple(a for a in (self.accounts.get(s) for s in scopes) if a is not None)
        starts = tuple(bounds(a.period, reserved_at)[0] for a in accounts)
        return Hold(accounts, amount, starts, held=True)

    def _roll(self, acc: Account, now: float) -> None:
        """A new period began: nothing spent in it yet; reservations in flight stay with the old one."""
        acc.starts, acc.resets = bounds(acc.period, now)
        acc.spent = acc.held = acc.floor = acc.seed = 0  # nothing on disk belongs to a period just begun
        acc.stale_reserved += acc.reserved
        acc.reserved = 0
        acc.exhausted_logged = False
        if acc.shared:
            acc.available, acc.lease_until, acc.pending, acc.pending_held = 0, 0.0, 0, 0
        else:
            acc.available = acc.limit // self.share
        log.info("budget of %s reset for the %s starting %s", acc.scope, acc.period, iso(acc.starts))

    def refusal(self, acc: Account, amount: int, what: str = "this request") -> BudgetExceeded:
        left = acc.remaining()
        resets = iso(acc.resets)
        whose = "this API key" if acc.kind == "key" else f"customer {acc.owner}"
        when = f"resets at {resets}" if resets else "does not reset (total budget)"
        if not acc.exhausted_logged:
            acc.exhausted_logged = True
            log.warning(
                "budget exhausted: %s spent %s of %s USD this %s; %s",
                acc.scope,
                usd(acc.spent),
                usd(acc.limit),
                acc.period,
                when,
                extra={"budget_scope": acc.scope},
            )
            if self.on_exhausted is not None:
                self.on_exhausted(acc)
        return BudgetExceeded(
            f"budget exceeded for {whose}: {usd(left)} USD left of {usd(acc.limit)} USD "
            f"({acc.period}); {what} may cost up to {usd(amount)} USD; the budget {when}",
            scope=acc.kind,
            remaining_usd=usd(left),
            resets_at=resets,
        )
