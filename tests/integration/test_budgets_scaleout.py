"""A budget shared by three instances through one real redis-server (docs/budgets.md): each instance
reserves only out of the slice Redis granted it, so together they never spend past the ceiling,
and slices move to where the requests are so most of the budget is still served. Each instance has
its own SQLite file: the spend they agree on lives only in Redis. The outage test runs last."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from test_budgets import PROVIDER, REQUEST, real_cost_micro

from support.cluster import Cluster
from support.waiting import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = Path(tmp_path_factory.mktemp("budget-cluster"))
    config = {"rate_limit": {"sync_interval": "1s"}}
    with Cluster(root, "budget-test", providers=[PROVIDER], config=config) as c:
        yield c


def budgeted_key(cluster: Cluster, budget: str) -> tuple[str, str]:
    out = cluster.nodes[0].cli(
        "keys", "create", "--name", "shared-budget", "--budget", budget, "--budget-period", "day"
    )
    match = re.search(r"key id (key_\w+)", out.stderr)
    assert match, out.stderr
    key = out.stdout.strip()
    for node in cluster.nodes:
        node.wait_for_key(key)
    return key, match.group(1)


def spent_everywhere(cluster: Cluster, key_id: str) -> int:
    """The key's spend summed over every instance's own usage table (flushed: every node was stopped
    or its usage route read, which flushes)."""
    total = 0
    for node in cluster.nodes:
        conn = sqlite3.connect(node.dir / "data" / "ensemble.db")
        try:
            (spent,) = conn.execute(
                "SELECT coalesce(sum(cost_micro_dollars), 0) FROM usage_daily WHERE key_id = ?", (key_id,)
            ).fetchone()
        finally:
            conn.close()
        total += int(spent)
    return total


def burst(cluster: Cluster, key: str | list[str], n: int, concurrency: int) -> list[int]:
    """n requests round robin over the instances (and over the keys, when several)."""
    keys = [key] if isinstance(key, str) else key

    def one(i: int) -> int:
        node = cluster.nodes[i % len(cluster.nodes)]
        key = keys[i % len(keys)]
        r = client.post(
            node.url + "/api/v1/generate", json=REQUEST, headers={"authorization": f"Bearer {key}"}
        )
        assert r.status_code in (200, 402), r.text
        return r.status_code

    # One client for every thread (httpx's is thread-safe): building one per request costs more
    # than the request.
    with (
        httpx.Client(timeout=30, limits=httpx.Limits(max_connections=concurrency)) as client,
        ThreadPoolExecutor(concurrency) as pool,
    ):
        return list(pool.map(one, range(n)))


def recorded_spend(cluster: Cluster, key_id: str, served: int) -> int:
    return recorded_spend_of(cluster, [key_id], served)


def recorded_spend_of(cluster: Cluster, key_ids: list[str], served: int, before: int = 0) -> int:
    """Wait until every served answer is in some instance's usage table (written in the background);
    returns the spend on top of `before`."""

    def total() -> int:
        return sum(spent_everywhere(cluster, k) for k in key_ids) - before

    wait_until(lambda: total() >= served * real_cost_micro(), timeout=10)
    return total()


def test_three_instances_never_spend_past_a_shared_budget(cluster: Cluster) -> None:
    budget_micro = 6000  # buys 30 answers
    key, key_id = budgeted_key(cluster, "0.006")
    codes = burst(cluster, key, n=120, concurrency=16)
    spent = recorded_spend(cluster, key_id, codes.count(200))
    could_buy = budget_micro // real_cost_micro()
    assert codes.count(402) > 0
    assert spent <= budget_micro, (spent, codes.count(200))
    assert spent == codes.count(200) * real_cost_micro()
    assert codes.count(200) >= 0.8 * could_buy, (codes.count(200), could_buy)


def test_a_customer_budget_created_on_one_instance_holds_on_all(cluster: Cluster) -> None:
    a, b, _ = cluster.nodes
    cid = a.cli(
        "customers", "create", "--name", "shared-co", "--budget", "0.004", "--budget-period", "week"
    ).stdout.strip()
    # One key made on A, one on B (whose database has never heard of the customer).
    keys = []
    for node, name in ((a, "co-1"), (b, "co-2")):
        out = node.cli("keys", "create", "--name", name, "--customer", cid)
        keys.append((out.stdout.strip(), re.search(r"key id (key_\w+)", out.stderr).group(1)))  # type: ignore[union-attr]
    for node in cluster.nodes:
        for key, _ in keys:
            node.wait_for_key(key)
    # The customer's budget is in force everywhere once a request it cannot pay for is refused.
    # Until it reaches an instance, that instance serves the probe (docs/budgets.md: spend made
    # before a budget arrived is not counted on the instances that made it); keep their cost apart.
    too_big = {**REQUEST, "max_tokens": 4000}
    probe_cost = 0

    def refused_everywhere() -> bool:
        nonlocal probe_cost
        refused = 0
        for n in cluster.nodes:
            r = httpx.post(
                n.url + "/api/v1/generate",
                json=too_big,
                headers={"authorization": f"Bearer {keys[1][0]}"},
                timeout=10,
            )
            if r.status_code == 200:
                probe_cost += r.json()["cost_micro_dollars"]
            refused += r.status_code == 402
        return refused == len(cluster.nodes)

    wait_until(refused_everywhere, timeout=10)
    key_ids = [k for _, k in keys]
    wait_until(lambda: sum(spent_everywhere(cluster, k) for k in key_ids) == probe_cost, timeout=10)
    codes = burst(cluster, [k for k, _ in keys], n=60, concurrency=12)
    spent = recorded_spend_of(cluster, key_ids, codes.count(200), before=probe_cost)
    assert codes.count(402) > 0
    assert spent == codes.count(200) * real_cost_micro() <= 4000, spent
    assert codes.count(200) >= 0.8 * ((4000 - probe_cost) // real_cost_micro()), (
        codes.count(200),
        probe_cost,
    )


def test_a_redis_outage_never_lets_spend_pass_the_budget(cluster: Cluster) -> None:
    budget_micro = 80_000  # 396 answers
    key, key_id = budgeted_key(cluster, "0.08")
    # Every instance takes a slice (at least 1/32 of the budget, at most a quarter), then Redis
    # goes away: each spends at most what it holds, then refuses, though demand exceeds the budget.
    first = burst(cluster, key, n=12, concurrency=3)
    assert first.count(200) == 12
    cluster.redis.stop()
    codes = burst(cluster, key, n=450, concurrency=9)
    spent = recorded_spend(cluster, key_id, first.count(200) + codes.count(200))
    assert spent <= budget_micro, spent
    assert codes.count(200) > 0 and codes.count(402) > 0  # served from the slices, then refused
    assert codes.count(200) * real_cost_micro() <= 3 * budget_micro // 4  # no more than the slices held
