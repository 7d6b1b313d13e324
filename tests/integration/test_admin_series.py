"""`GET /admin/usage/series` (docs/admin-api.md) against a real `ensemble serve`: live traffic through
the mock provider and the fake upstream, and older history written into the request log the
gateway reads, so that buckets, groups and range edges can be checked to the millisecond."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.dashboard import DashboardStack

PATH = "/admin/usage/series"
# History on two days in March 2025: (created_at, key, model, provider, http status, input, output, cost µ$)
HISTORY = [
    ("2025-03-01T10:15:00.000Z", "key_hist_a", "mock-1", "mock", 200, 100, 10, 120),
    ("2025-03-01T10:45:30.500Z", "key_hist_a", "gpt-4o", "openai", 502, 0, 0, 0),
    ("2025-03-01T11:05:00.000Z", "key_hist_b", "gpt-4o", "openai", 200, 200, 20, 700),
    ("2025-03-02T00:00:00.000Z", "key_hist_b", "mock-1", "mock", 200, 50, 5, 60),
    ("2025-03-02T23:59:59.999Z", "key_hist_a", "mock-1", "mock", 200, 10, 1, 12),
    ("2025-03-03T00:00:00.000Z", "key_hist_a", "mock-1", "mock", 200, 1, 1, 3),
]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DashboardStack]:
    stack = DashboardStack(Path(tmp_path_factory.mktemp("series")))
    stack.seed()
    with sqlite3.connect(stack.server.dir / "data" / "ensemble.db") as db:
        db.executemany(
            "INSERT INTO request_log (request_id, key_id, model, provider, endpoint_id, status, http_status, "
            "input_tokens, output_tokens, cost_micro_dollars, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            [
                (
                    f"req_hist_{i}",
                    key,
                    model,
                    provider,
                    f"{provider}-1",
                    "success" if http == 200 else "error",
                    http,
                    inp,
                    out,
                    cost,
                    at,
                )
                for i, (at, key, model, provider, http, inp, out, cost) in enumerate(HISTORY)
            ],
        )
    yield stack
    stack.stop()


def series(stack: DashboardStack, **params: Any) -> dict[str, Any]:
    r = stack.admin("GET", PATH, params=params)
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    body: dict[str, Any] = r.json()
    for s in body["series"]:  # every series has one point per bucket
        assert len(s["points"]) == len(body["buckets"])
    return body


def by_name(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in body["series"]}


def test_live_traffic_by_model_matches_the_logs_and_the_usage_tables(stack: DashboardStack) -> None:
    body = series(stack)
    assert (body["bucket"], body["group"]) == ("hour", "model")
    now = datetime.now(UTC)
    starts = [datetime.fromisoformat(b) for b in body["buckets"]]
    assert all(b - a == timedelta(hours=1) for a, b in pairwise(starts))
    assert starts[0] <= now - timedelta(hours=24) < starts[0] + timedelta(hours=1)  # since rounded down
    assert starts[-1] <= now < starts[-1] + timedelta(hours=1)  # until is now
    assert len(starts) in (24, 25)
    assert body["since"] == body["buckets"][0]

    logs = stack.admin("GET", "/admin/logs", params={"limit": 1000, "since": body["since"]}).json()
    assert body["totals"]["requests"] == logs["total"] == 53
    assert body["totals"]["errors"] == sum(1 for e in logs["logs"] if e["status"] == "error") == 3
    assert body["totals"]["cost_micro_dollars"] == sum(e["cost_micro_dollars"] for e in logs["logs"])
    assert body["totals"]["cached_tokens"] == sum(e["cached_tokens"] for e in logs["logs"]) > 0
    # The traffic is minutes old: in the last bucket (or the one before, across an hour's turn).
    for s in body["series"]:
        assert all(p["requests"] == 0 for p in s["points"][:-2])
        assert sum(p["requests"] for p in s["points"]) == s["totals"]["requests"]
    # The request log and the per-key daily usage table are written separately: they must agree.
    models = by_name(body)
    assert set(models) == {"mock-1", "gpt-4o"}
    usage: dict[str, dict[str, int]] = {}
    for key in stack.admin("GET", "/admin/keys").json()["keys"]:
        for model, u in stack.admin("GET", f"/admin/keys/{key['key_id']}/usage").json()["by_model"].items():
            for field, value in u.items():
                if field != "cost":
                    usage.setdefault(model, {}).setdefault(field, 0)
                    usage[model][field] += value
    for model, s in models.items():
        assert {k: v for k, v in s["totals"].items() if k != "cost"} == usage[model], model
    # Biggest spender first; cost is the exact decimal string of the micro-dollars.
    costs = [s["totals"]["cost_micro_dollars"] for s in body["series"]]
    assert costs == sorted(costs, reverse=True)
    assert all(s["totals"]["cost"] for s in body["series"])


def test_group_by_provider_and_by_key(stack: DashboardStack) -> None:
    providers = by_name(series(stack, group="provider"))
    assert set(providers) == {"mock", "openai", ""}  # "": refused before a provider was chosen (403)
    assert providers[""]["totals"]["errors"] == providers[""]["totals"]["requests"] == 1
    keys = by_name(series(stack, group="key_id"))
    names = {k["key_id"]: k["name"] for k in stack.admin("GET", "/admin/keys").json()["keys"]}
    assert {names[k] for k in keys} == {"checkout-service", "nightly-batch"}
    nightly = next(k for k, n in names.items() if n == "nightly-batch")
    only = series(stack, group="model", key_id=nightly)
    assert set(by_name(only)) == {"gpt-4o", "mock-1"}  # mock-1: its refused (403) request
    assert only["totals"] == keys[nightly]["totals"]


def test_hour_buckets_and_range_edges(stack: DashboardStack) -> None:
    # A bare date in `until` includes that day; `since` is rounded down to its bucket's start.
    body = series(stack, since="2025-03-01T10:30:00Z", until="2025-03-02", bucket="hour")
    assert body["since"] == "2025-03-01T10:00:00Z"
    assert body["until"] == "2025-03-03T00:00:00.000Z"
    assert body["buckets"][0] == "2025-03-01T10:00:00Z" and body["buckets"][-1] == "2025-03-02T23:00:00Z"
    assert len(body["buckets"]) == 14 + 24
    at = {b: i for i, b in enumerate(body["buckets"])}
    models = by_name(body)
    gpt, mock = models["gpt-4o"]["points"], models["mock-1"]["points"]
    assert gpt[at["2025-03-01T10:00:00Z"]]["errors"] == 1
    assert gpt[at["2025-03-01T11:00:00Z"]]["cost_micro_dollars"] == 700
    assert mock[at["2025-03-01T10:00:00Z"]]["input_tokens"] == 100
    assert mock[at["2025-03-02T00:00:00Z"]]["requests"] == 1
    assert mock[at["2025-03-02T23:00:00Z"]]["cost"] == "0.000012"
    assert body["totals"]["requests"] == 5  # the row at 2025-03-03T00:00 is past `until`

    # `until` is exclusive to the millisecond.
    edge = series(stack, since="2025-03-01", until="2025-03-01T11:05:00.000Z")
    assert edge["totals"]["requests"] == 2
    assert series(stack, since="2025-03-01", until="2025-03-01T11:05:00.001Z")["totals"]["requests"] == 3


def test_day_buckets(stack: DashboardStack) -> None:
    body = series(stack, since="2025-02-28", until="2025-03-03", bucket="day", group="provider")
    assert body["buckets"] == [f"2025-0{d}T00:00:00Z" for d in ("2-28", "3-01", "3-02", "3-03")]
    providers = by_name(body)
    assert [p["requests"] for p in providers["mock"]["points"]] == [0, 1, 2, 1]
    assert [p["requests"] for p in providers["openai"]["points"]] == [0, 2, 0, 0]
    assert providers["openai"]["totals"]["errors"] == 1
    # The default span of day buckets is 30 days up to now.
    default = series(stack, bucket="day")
    assert len(default["buckets"]) == 31
    assert default["totals"]["requests"] == 53


def test_a_range_without_traffic_has_zero_filled_buckets_and_no_series(stack: DashboardStack) -> None:
    body = series(stack, since="2024-06-01", until="2024-06-01T05:59:59Z")
    assert len(body["buckets"]) == 6
    assert body["series"] == []
    assert body["totals"]["requests"] == 0 and body["totals"]["cost"] == "0"


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"bucket": "week"}, "bucket"),
        ({"bucket": ""}, "bucket"),
        ({"group": "endpoint"}, "group"),
        ({"since": "yesterday"}, "since"),
        ({"since": "2025-02-30"}, "since"),
        ({"until": "2025-13-01"}, "until"),
        ({"until": "9999-12-31"}, "until"),
        ({"since": "2025-03-02", "until": "2025-03-01"}, "until"),
        ({"since": "2025-03-01T10:00:00Z", "until": "2025-03-01T10:00:00Z"}, "until"),
        ({"since": "2020-01-01", "until": "2025-01-01"}, "since"),  # 43,848 hour buckets
        ({"since": "2020-01-01", "until": "2025-01-01", "bucket": "day"}, "since"),  # 1,828 days
        ({"key_id": ""}, "key_id"),
        ({"key_id": "k" * 129}, "key_id"),
        ({"model": "mock-1"}, "model"),
    ],
)
def test_bad_parameters_are_400_naming_them(
    stack: DashboardStack, params: dict[str, str], param: str
) -> None:
    r = stack.admin("GET", PATH, params=params)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request" and error["code"] == "invalid_query"
    assert error["message"].startswith(f"{param}:"), error


def test_repeated_parameter_is_400(stack: DashboardStack) -> None:
    r = stack.admin("GET", PATH + "?bucket=hour&bucket=day")
    assert r.status_code == 400 and r.json()["error"]["message"].startswith("bucket:")


def test_needs_the_admin_key(stack: DashboardStack) -> None:
    client_key = stack.server.key
    for headers in ({}, {"authorization": f"Bearer {client_key}"}, {"authorization": "Bearer adm_wrong"}):
        r = httpx.get(stack.url + PATH, headers=headers, timeout=10)
        assert r.status_code == 401, headers
        assert r.json()["error"]["type"] == "authentication"
