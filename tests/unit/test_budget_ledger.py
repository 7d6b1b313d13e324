"""The budget ledger on an injected clock: periods reset on UTC calendar bounds, reservations are
all-or-nothing across key and customer, and the real cost replaces the reservation."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from ensemble.budget.ledger import Budgets, Hold
from ensemble.budget.period import bounds, iso
from ensemble.budget.view import parse_usd
from ensemble.errors import BudgetExceeded, InvalidRequest


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


class Clock:
    def __init__(self, text: str) -> None:
        self.now = at(text)

    def __call__(self) -> float:
        return self.now


def test_periods_are_utc_calendar_periods() -> None:
    now = at("2026-12-02T13:19:00")  # a Wednesday
    assert (
        iso(bounds("day", now)[0]) == "2026-12-02T00:00:00Z"
        and iso(bounds("day", now)[1]) == "2026-12-03T00:00:00Z"
    )
    assert (
        iso(bounds("week", now)[0]) == "2026-11-30T00:00:00Z"
        and iso(bounds("week", now)[1]) == "2026-12-07T00:00:00Z"
    )
    assert iso(bounds("month", now)[1]) == "2027-01-01T00:00:00Z"
    assert bounds("total", now) == (0.0, None)


def test_a_period_reset_frees_the_budget_and_keeps_in_flight_spend_in_the_old_period() -> None:
    clock = Clock("2026-12-31T23:59:00")
    b = Budgets(clock=clock)
    b.configure("key", "k", 1000, "day", spent=0)
    accounts = b.accounts_for("k", "")
    first = b.try_reserve(accounts, 600)
    assert isinstance(first, Hold)
    assert not isinstance(b.try_reserve(accounts, 600), Hold)  # 400 left today
    clock.now = at("2027-01-01T00:00:01")  # a new day (and month, and year)
    second = b.try_reserve(accounts, 900)
    assert isinstance(second, Hold)  # the whole budget again
    acc = accounts[0]
    assert acc.resets == at("2027-01-02T00:00:00") and acc.spent == 0
    b.settle(first, 500)  # admitted yesterday: charged to yesterday, no refund into today
    assert acc.spent == 0 and acc.available == 100 and acc.stale_reserved == 0
    b.settle(second, 300)
    assert acc.spent == 300 and acc.available == 700 and acc.reserved == 0


def test_reservations_take_key_and_customer_together_or_not_at_all() -> None:
    b = Budgets(clock=Clock("2026-12-02T12:00:00"))
    b.configure("key", "k1", 10_000, "month", spent=0)
    b.configure("customer", "c", 1000, "month", spent=200)
    accounts = b.accounts_for("k1", "c")
    assert [a.kind for a in accounts] == ["key", "customer"]
    refused = b.try_reserve(accounts, 900)  # the customer has 800 left
    assert not isinstance(refused, Hold) and refused.kind == "customer"
    assert accounts[0].available == 10_000 and accounts[0].reserved == 0  # the key was not touched
    hold = b.try_reserve(accounts, 800)
    assert isinstance(hold, Hold)
    b.settle(hold, 50)
    assert [a.spent for a in accounts] == [50, 250]
    assert accounts[1].available == 750


def test_workers_without_redis_each_admit_their_share() -> None:
    b = Budgets(share=2, clock=Clock("2026-12-02T12:00:00"))
    b.configure("key", "k", 1000, "total", spent=200)
    assert b.accounts_for("k", "")[0].available == 400


def test_a_committed_batch_reservation_is_held_until_any_worker_settles_its_items() -> None:
    clock = Clock("2026-12-02T12:00:00")
    submitter, collector = Budgets(share=2, clock=clock), Budgets(share=2, clock=clock)
    for b in (submitter, collector):
        b.configure("key", "k", 1000, "day", spent=0)
    mine, theirs = submitter.get("key", "k"), collector.get("key", "k")
    assert mine is not None and theirs is not None
    hold = submitter.try_reserve((mine,), 400)
    assert isinstance(hold, Hold)
    submitter.commit(hold)
    assert (mine.reserved, mine.held, mine.available, mine.remaining()) == (0, 400, 100, 600)
    # The other worker collects the result: a refund of what the worst case did not use.
    collector.settle(collector.held_hold(["key:k"], 400, clock.now), 150)
    assert (theirs.spent, theirs.available) == (150, 750)
    # Both spend all they may: together exactly the budget, never more.
    assert 150 + mine.available + theirs.available == 1000
    # An item reserved yesterday settles against yesterday: nothing comes back today.
    before = theirs.available
    collector.settle(collector.held_hold(["key:k"], 400, clock.now - 86400), 0)
    assert theirs.available == before
    # A restarted worker reads what is still held back from disk.
    restarted = Budgets(clock=clock)
    restarted.configure("key", "k", 1000, "day", spent=150, held=400)
    acc = restarted.get("key", "k")
    assert acc is not None and acc.available == 450 and acc.seed == 550


def test_refusal_says_what_is_left_and_when_it_resets() -> None:
    b = Budgets(clock=Clock("2026-12-02T12:00:00"))
    b.configure("key", "k", 250_000, "month", spent=240_000)
    with pytest.raises(BudgetExceeded) as e:
        asyncio.run(b.reserve(b.accounts_for("k", ""), 20_000))
    assert e.value.status == 402 and e.value.code == "budget_exceeded"
    assert e.value.remaining_usd == "0.01" and e.value.resets_at == "2027-01-01T00:00:00Z"
    assert (
        "0.01 USD left of 0.25 USD" in e.value.message and "resets at 2027-01-01T00:00:00Z" in e.value.message
    )


def test_dollars_parse_exactly_to_micro_dollars() -> None:
    assert parse_usd("25") == 25_000_000 and parse_usd("0.000001") == 1 and parse_usd(None) is None
    for bad in ("ten", "-1", "0.0000001", "nan", "inf"):
        with pytest.raises(InvalidRequest):
            parse_usd(bad)


def test_the_worst_case_covers_every_token_at_the_dearest_rate() -> None:
    from ensemble.budget.cost import MEDIA_PART_TOKENS, Rates, prompt_tokens_bound, worst_case_micro
    from ensemble.config.schema import Pricing
    from ensemble.providers.mock import prompt_tokens
    from ensemble.types import ImageContent, InferenceRequest, MediaSource, Message, TextContent
    from ensemble.usage.pricing import Price

    text = "naïve café " * 50
    request = InferenceRequest(
        model="m",
        messages=[
            Message(role="system", content=text),
            Message(
                role="user",
                content=[
                    TextContent(text=text),
                    ImageContent(source=MediaSource(type="url", url="http://x/y.png")),
                ],
            ),
        ],
        max_tokens=100,
    )
    bound = prompt_tokens_bound(request)
    assert bound >= prompt_tokens(request) and bound >= 2 * len(text) + MEDIA_PART_TOKENS
    cheap = Price(Pricing(input=1.0, output=2.0))
    dear = Price(Pricing(input=3.0, output=15.0, cache_write=3.75))  # a failover target
    rates = Rates([cheap, dear], catalogue_max=4096)
    assert worst_case_micro(request, rates) == -(-(bound * 3.75 + 100 * 15) // 1)
    request.max_tokens = None  # then the catalogue's maximum
    assert worst_case_micro(request, rates) == -(-(bound * 3.75 + 4096 * 15) // 1)
