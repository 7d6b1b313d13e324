"""What a shared budget counts when it starts (docs/budgets.md): three instances on one real
redis-server, each with spend of its own in its own SQLite from before the key had a budget; the
shared total is the sum of all three, also after Redis lost its data; and a provider batch
submitted on one instance holds its reservation on the others too."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_batch_anthropic import anthropic_provider, params
from test_budgets import ADMIN, PROVIDER, REQUEST, real_cost_micro
from test_budgets_scaleout import burst, spent_everywhere

from support.cluster import Cluster
from support.fake import FakeUpstream
from support.waiting import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, fake: FakeUpstream) -> Iterator[Cluster]:
    fake.configure("anth-shared", batch_delay_ms=60_000)
    root = Path(tmp_path_factory.mktemp("budget-seeds"))
    with Cluster(
        root,
        "budget-seeds",
        providers=[PROVIDER, anthropic_provider(fake.endpoint_url("anth-shared"))],
        config={"rate_limit": {"sync_interval": "1s"}},
        env={"ENSEMBLE_ADMIN_KEY": ADMIN},
    ) as c:
        yield c


def admin(node: Any) -> httpx.Client:
    return httpx.Client(base_url=node.url, headers={"authorization": f"Bearer {ADMIN}"}, timeout=30)


def new_key(cluster: Cluster, **fields: Any) -> tuple[str, str]:
    with admin(cluster.nodes[0]) as a:
        r = a.post("/admin/keys", json={"name": "seeded", **fields})
    assert r.status_code == 201, r.text
    key, key_id = r.json()["key"], r.json()["key_id"]
    for node in cluster.nodes:
        node.wait_for_key(key)
    return key, key_id


def spent_usd(node: Any, key_id: str) -> int:
    with admin(node) as a:
        return int(Decimal(a.get(f"/admin/keys/{key_id}/config").json()["spent_usd"]) * 1_000_000)


def ask(node: Any, key: str, body: dict[str, Any] = REQUEST) -> httpx.Response:
    return httpx.post(
        node.url + "/api/v1/generate", json=body, headers={"authorization": f"Bearer {key}"}, timeout=30
    )


def test_spend_every_instance_recorded_before_the_budget_counts_once(cluster: Cluster) -> None:
    key, key_id = new_key(cluster)
    # No budget yet: each instance serves some answers and records them in its own database.
    for node, n in zip(cluster.nodes, (5, 3, 4), strict=True):
        for _ in range(n):
            assert ask(node, key).status_code == 200
    prior = 12 * real_cost_micro()
    wait_until(lambda: spent_everywhere(cluster, key_id) == prior, timeout=10)
    budget = 6000  # 29 answers in all: 17 are left
    with admin(cluster.nodes[0]) as a:
        r = a.put(f"/admin/keys/{key_id}/config", json={"budget_usd": "0.006", "budget_period": "day"})
        assert r.status_code == 200, r.text
    # Once the budget is in force everywhere, every instance counts the others' earlier spend too.
    wait_until(lambda: all(spent_usd(n, key_id) == prior for n in cluster.nodes), timeout=15)
    codes = burst(cluster, key, n=60, concurrency=9)
    could_buy = (budget - prior) // real_cost_micro()
    wait_until(lambda: spent_everywhere(cluster, key_id) >= prior + codes.count(200) * real_cost_micro(), 10)
    spent = spent_everywhere(cluster, key_id)
    assert spent == prior + codes.count(200) * real_cost_micro() <= budget, (spent, codes.count(200))
    assert codes.count(200) >= 0.8 * could_buy, (codes.count(200), could_buy)
    wait_until(lambda: all(spent_usd(n, key_id) == spent for n in cluster.nodes), timeout=10)

    # Redis loses everything (a restart without persistence): the instances seed it again with
    # their databases' shares and the totals they saw, so the spent budget stays spent.
    cluster.redis.kill()
    cluster.redis.start()
    after = [ask(n, key).status_code for n in cluster.nodes for _ in range(3)]
    final = spent + after.count(200) * real_cost_micro()
    wait_until(lambda: spent_everywhere(cluster, key_id) == final, timeout=10)
    assert final <= budget
    wait_until(lambda: all(spent_usd(n, key_id) == final for n in cluster.nodes), timeout=15)


def test_a_provider_batch_on_one_instance_holds_its_reservation_on_all(cluster: Cluster) -> None:
    a, b, c = cluster.nodes
    key, _ = new_key(cluster, budget_usd="0.001", budget_period="day")
    headers = {"x-api-key": key, "anthropic-version": "2023-06-01"}
    two = [{"custom_id": f"s{i}", "params": params(f"shared {i}")} for i in range(2)]
    r = httpx.post(f"{a.url}/v1/messages/batches", json={"requests": two}, headers=headers, timeout=30)
    assert r.status_code == 200, r.text
    # About 0.00086 USD is held for the batch; a request that may cost 0.00021 fits nowhere now.
    wait_until(lambda: all(ask(n, key).status_code == 402 for n in (b, c)), timeout=10)
    assert ask(a, key).status_code == 402
    canceled = httpx.post(f"{a.url}/v1/messages/batches/{r.json()['id']}/cancel", headers=headers, timeout=30)
    assert canceled.status_code == 200, canceled.text
    # Canceled: the reservation comes back to the shared budget, and the others can spend it.
    wait_until(lambda: ask(b, key).status_code == 200, timeout=30)
