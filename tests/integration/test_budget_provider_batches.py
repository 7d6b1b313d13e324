"""A batch sent to the provider's Message Batches API is reserved against its key's budget when it is
submitted (docs/budgets.md): the whole batch's worst case at the batch price, or 402
`budget_exceeded` in Anthropic's error shape; the reservation survives a restart, and each item
settles its real cost when its result arrives, or nothing when it is canceled."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import httpx
import orjson
import pytest
from test_batch_anthropic import anthropic_provider, params, upstream_calls
from test_budgets import ADMIN, key_record, new_key

from support.ensemble import Ensemble
from support.fake import FakeUpstream
from support.waiting import wait_until

pytestmark = pytest.mark.integration

# claude-sonnet-4-6 at $2 / $4 per million tokens, half that in a batch: one item of 200 output
# tokens may cost about 0.00043 USD in a batch (0.00086 at the interactive price). A budget of
# 0.001 holds two such items, not three.
BUDGET = "0.001"


def items(n: int, tag: str) -> list[dict[str, Any]]:
    return [{"custom_id": f"{tag}{i}", "params": params(f"{tag} {i}")} for i in range(n)]


def submit(server: Ensemble, key: str, n: int, tag: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v1/messages/batches",
        json={"requests": items(n, tag)},
        headers={"x-api-key": key, "anthropic-version": "2023-06-01"},
        timeout=30,
    )


def ended(server: Ensemble, key: str, batch_id: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        r = httpx.get(f"{server.url}/api/v1/batch/{batch_id}", headers={"authorization": f"Bearer {key}"})
        body: dict[str, Any] = r.json()
        return body if body["status"] == "ended" else None

    found: dict[str, Any] = wait_until(done, timeout=30, what=f"batch {batch_id} to end")
    return found


def real_cost(server: Ensemble, key: str, batch_id: str) -> int:
    r = httpx.get(f"{server.url}/api/v1/batch/{batch_id}/results", headers={"authorization": f"Bearer {key}"})
    lines = [orjson.loads(x) for x in r.text.splitlines()]
    assert lines and all(x["result"]["type"] == "succeeded" for x in lines), lines
    return sum(int(x["result"]["response"]["cost_micro_dollars"]) for x in lines)


def micro(text: str) -> int:
    return int(Decimal(text) * 1_000_000)


def holds_on_disk(server: Ensemble) -> int:
    with sqlite3.connect(server.dir / "data" / "ensemble.db") as db:
        (n,) = db.execute("SELECT count(*) FROM budget_holds").fetchone()
    return int(n)


def serve(tmp_path: Path, fake: FakeUpstream, name: str, delay_ms: int, **config: Any) -> Ensemble:
    fake.configure(name, batch_delay_ms=delay_ms)
    return Ensemble(
        tmp_path,
        providers=[anthropic_provider(fake.endpoint_url(name))],
        config=config,
        env={"ENSEMBLE_ADMIN_KEY": ADMIN},
    )


@contextlib.contextmanager
def budgeted(
    tmp_path: Path, fake: FakeUpstream, name: str, delay_ms: int, **config: Any
) -> Iterator[tuple[Ensemble, str, str]]:
    """A server whose provider batches take `delay_ms`, with a key on a day budget of BUDGET."""
    server = serve(tmp_path, fake, name, delay_ms, **config)
    try:
        yield server, *new_key(server, budget_usd=BUDGET, budget_period="day")
    finally:
        server.stop()


def test_a_batch_past_the_budget_is_refused_402_in_anthropic_shape(
    tmp_path: Path, fake: FakeUpstream
) -> None:
    with budgeted(tmp_path, fake, "anth-b1", 300) as (server, key, _):
        client = anthropic.Anthropic(base_url=server.url, api_key=key, max_retries=0)
        with client, pytest.raises(anthropic.APIStatusError) as refused:
            client.messages.batches.create(requests=items(3, "big"))  # type: ignore[arg-type]
        assert refused.value.status_code == 402
        body = refused.value.response.json()
        assert body["type"] == "error" and body["error"]["type"] == "budget_exceeded", body
        message = body["error"]["message"]
        assert "left of 0.001 USD (day)" in message and "this batch may cost up to" in message, message
        assert "the budget resets at" in message
        assert not upstream_calls(fake, "anth-b1", "/v1/messages/batches")  # nothing reached the provider
        # Two items fit (at the batch price: at the interactive one they would not).
        r = submit(server, key, 2, "fits")
        assert r.status_code == 200, r.text


def test_a_batch_holds_its_worst_case_until_each_item_settles_its_real_cost(
    tmp_path: Path, fake: FakeUpstream
) -> None:
    with budgeted(tmp_path, fake, "anth-b2", 2500) as (server, key, key_id):
        first = submit(server, key, 2, "held")
        assert first.status_code == 200, first.text
        # While the provider works on it, the batch holds its worst case: another does not fit.
        held = micro(BUDGET) - micro(key_record(server, key_id)["remaining_usd"])
        assert 700 < held < 1000, held
        assert submit(server, key, 1, "refused").status_code == 402
        assert holds_on_disk(server) == 2
        batch_id = first.json()["id"]
        ended(server, key, batch_id)
        cost = real_cost(server, key, batch_id)
        record = key_record(server, key_id)
        assert 0 < cost < held
        assert micro(record["spent_usd"]) == cost
        assert micro(record["remaining_usd"]) == micro(BUDGET) - cost  # the rest is free again
        assert holds_on_disk(server) == 0
        assert submit(server, key, 2, "again").status_code == 200


def test_the_reservation_survives_a_restart_and_a_cancel_gives_it_back(
    tmp_path: Path, fake: FakeUpstream
) -> None:
    server = serve(tmp_path, fake, "anth-b3", 60_000)
    restarted: Ensemble | None = None
    try:
        key, key_id = new_key(server, budget_usd=BUDGET, budget_period="day")
        first = submit(server, key, 2, "long")
        assert first.status_code == 200, first.text
        batch_id = first.json()["id"]
        wait_until(lambda: upstream_calls(fake, "anth-b3", "/v1/messages/batches"), timeout=20)
        assert server.stop() == 0
        restarted = Ensemble(
            tmp_path,
            providers=[anthropic_provider(fake.endpoint_url("anth-b3"))],
            env={"ENSEMBLE_ADMIN_KEY": ADMIN},
            key=False,
        )
        # The restarted server reads the batch's reservation back from its database.
        assert submit(restarted, key, 1, "after").status_code == 402
        assert micro(key_record(restarted, key_id)["remaining_usd"]) < micro(BUDGET) // 5
        r = httpx.post(
            f"{restarted.url}/v1/messages/batches/{batch_id}/cancel",
            headers={"x-api-key": key, "anthropic-version": "2023-06-01"},
        )
        assert r.status_code == 200, r.text
        done = ended(restarted, key, batch_id)
        assert done["request_counts"]["canceled"] == 2
        record = key_record(restarted, key_id)
        assert micro(record["spent_usd"]) == 0 and micro(record["remaining_usd"]) == micro(BUDGET)
        assert holds_on_disk(restarted) == 0
        assert submit(restarted, key, 2, "fresh").status_code == 200
    finally:
        (restarted or server).stop()


def test_native_batches_reserve_their_provider_items_and_cancel_releases_queued_ones(
    tmp_path: Path, fake: FakeUpstream
) -> None:
    with budgeted(tmp_path, fake, "anth-b4", 60_000) as (server, key, key_id), server.client(key) as c:
        three = [{"custom_id": f"n{i}", **params(f"native {i}")} for i in range(3)]
        r = c.post("/api/v1/batch", json={"requests": three})
        assert r.status_code == 402 and r.json()["error"]["type"] == "budget_exceeded", r.text
        r = c.post("/api/v1/batch", json={"requests": three[:2]})
        assert r.status_code == 200, r.text
        # Canceled at once, before the runner sends it: the queued items give their holds back.
        c.post(f"/api/v1/batch/{r.json()['batch_id']}/cancel")
        wait_until(lambda: micro(key_record(server, key_id)["remaining_usd"]) == micro(BUDGET), timeout=20)


def test_a_request_the_rate_limit_fallback_sends_to_a_provider_batch_holds_its_batch_price(
    tmp_path: Path, fake: FakeUpstream
) -> None:
    fake.enqueue("anth-b5", {"status": 429, "retry_after": 1})
    with budgeted(tmp_path, fake, "anth-b5", 2500, batch={"collection_window": "200ms"}) as (
        server,
        key,
        key_id,
    ):
        with server.client(key) as c:
            r = c.post(
                "/api/v1/generate",
                json={
                    "model": params("x")["model"],
                    "max_tokens": 200,
                    "messages": [{"role": "user", "content": "later"}],
                },
                headers={"prefer": "respond-async"},
            )
            assert r.status_code == 202, r.text
            # Queued: the interactive worst case went back, the batch-price one is held instead.
            held = micro(BUDGET) - micro(key_record(server, key_id)["remaining_usd"])
            assert 300 < held < 600, held
            status_url = r.json()["status_url"]
            wait_until(lambda: c.get(status_url).json()["status"] == "completed", timeout=30)
            cost = c.get(r.json()["retrieve_url"]).json()["cost_micro_dollars"]
        record = key_record(server, key_id)
        assert 0 < micro(record["spent_usd"]) == cost
        assert micro(record["remaining_usd"]) == micro(BUDGET) - cost
