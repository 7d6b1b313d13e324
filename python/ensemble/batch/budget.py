"""Provider batches against spend budgets (docs/budgets.md).

Items sent to a provider's batch API never pass the gateway's admission, so their budget is taken
when the batch is submitted: the worst case of every such item, the same estimate as an
interactive request's at the provider's batch price (the discount their results are charged at),
on the key's and its customer's budgets together, or the batch is refused with 402. The
reservation is written beside the items (`budget/holds.py`) and each item settles its own share,
with its real cost or nothing, when it finishes. Items that run through the gateway reserve their
own budget when they run, like any request.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from ensemble import telemetry
from ensemble.batch.provider import BatchPrice
from ensemble.budget import holds
from ensemble.budget.cost import Rates, worst_case_micro
from ensemble.budget.holds import ItemHold
from ensemble.budget.ledger import Budgets, Hold
from ensemble.errors import BudgetExceeded, ProviderError
from ensemble.storage.keys import KeyRecord
from ensemble.types import InferenceRequest

if TYPE_CHECKING:
    import aiosqlite

    from ensemble.server.runtime import Runtime


class BatchBudgets:
    def __init__(self, rt: Runtime, conn: aiosqlite.Connection) -> None:
        self.rt = rt
        self.conn = conn  # the batch store's: holds are deleted where items finish

    @property
    def budgets(self) -> Budgets:
        return self.rt.budgets

    def worst_case(self, request: InferenceRequest) -> int:
        """At the batch price of the model's first provider, where a provider batch is sent."""
        assert self.rt.gateway is not None
        provider = next(iter(self.rt.gateway.router.models().get(request.model) or ()), None)
        if provider is None or request.model not in provider.prices:
            raise ProviderError(f"model {request.model!r} has no provider to batch it", code="no_endpoint")
        model = provider.models[request.model]
        rates = Rates([BatchPrice.of(provider.prices[request.model])], model.max_output_tokens)
        return worst_case_micro(request, rates)

    @contextlib.asynccontextmanager
    async def reserved(
        self, key: KeyRecord, requests: list[tuple[int, InferenceRequest]], now_ms: int
    ) -> AsyncIterator[dict[int, ItemHold]]:
        """Reserve the worst case of `requests` (by item index) or raise BudgetExceeded; the caller
        stores the item holds it is given, and the reservation is held once that succeeded
        (given back if it raised)."""
        accounts = self.budgets.accounts_for(key.key_id, key.customer_id)
        if not accounts or not requests:
            yield {}
            return
        worst = {idx: self.worst_case(request) for idx, request in requests}
        try:
            hold = await self.budgets.reserve(accounts, sum(worst.values()), what="this batch")
        except BudgetExceeded as e:
            metrics = telemetry.metrics
            if metrics is not None:
                metrics.budget_exceeded.labels(e.scope).inc()
            raise
        scopes = [a.scope for a in accounts]
        try:
            yield {idx: ItemHold(scopes, amount, now_ms) for idx, amount in worst.items()}
        except BaseException:
            self.budgets.settle(hold, 0)
            raise
        self.budgets.commit(hold)

    async def take(self, batch_id: str, idx: int) -> Hold | None:
        """An item is finishing: its share of the batch's reservation, for its record to settle."""
        held = await holds.take(self.conn, batch_id, idx)
        return None if held is None else self._hold(held)

    def release(self, released: list[ItemHold]) -> None:
        """Items that finished without running (canceled, expired): nothing charged."""
        for held in released:
            self.budgets.settle(self._hold(held), 0)

    def _hold(self, held: ItemHold) -> Hold:
        return self.budgets.held_hold(held.scopes, held.amount, held.reserved_ms / 1000)
