"""Spend budgets are a hard ceiling (docs/budgets.md): concurrent requests against a real server never
spend past a key's or a customer's budget, most of what the budget can buy is served, the rest is
refused with 402 `budget_exceeded` in each format's own error shape, and a request that cost less
than its reservation frees the rest at once."""

from __future__ import annotations

import asyncio
import re
import secrets
import sqlite3
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest
import websockets
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from support.ensemble import Ensemble, openai_provider
from support.fake import FakeUpstream
from support.waiting import wait_until

pytestmark = pytest.mark.integration

ADMIN = "adm_" + secrets.token_urlsafe(24)
# Output dominates the price, so the worst case reserved (every max_tokens token) is close to the
# real cost of an answer that uses all of them: what the budget can buy is then plain to count.
PROVIDER: dict[str, Any] = {
    "name": "mock",
    "type": "mock",
    "mock": {"latency": "20ms", "chunks": 4, "chunk_gap": "5ms"},
    "endpoints": [{"id": "mock-local"}],
    "models": [
        {"name": "mock-1", "max_output_tokens": 4096, "pricing": {"input": 0.1, "output": 10.0}},
        {"name": "mock-embed", "kind": "embedding", "pricing": {"input": 100.0}},
    ],
}
PROMPT = "one two three four five six seven eight nine ten eleven twelve"
MAX_TOKENS = 20  # the mock answers 9 + 12 words: every allowed token is used
REQUEST = {"model": "mock-1", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": MAX_TOKENS}


def real_cost_micro() -> int:
    """One answer: 15 prompt tokens (characters / 4) at 0.1 + 20 output tokens at 10 micro-dollars."""
    return round(len(PROMPT) // 4 * 0.1 + MAX_TOKENS * 10)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ensemble]:
    s = Ensemble(
        Path(tmp_path_factory.mktemp("budgets")), providers=[PROVIDER], env={"ENSEMBLE_ADMIN_KEY": ADMIN}
    )
    yield s
    s.stop()


def admin(server: Ensemble) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {ADMIN}"}, timeout=30)


def new_key(server: Ensemble, **fields: Any) -> tuple[str, str]:
    with admin(server) as a:
        r = a.post("/admin/keys", json={"name": "budgeted", **fields})
    assert r.status_code == 201, r.text
    return r.json()["key"], r.json()["key_id"]


def key_record(server: Ensemble, key_id: str) -> dict[str, Any]:
    with admin(server) as a:
        r = a.get(f"/admin/keys/{key_id}/config")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def durable_spend(server: Ensemble, key_ids: list[str]) -> int:
    """What the usage table holds (the request log writes it in the background: flushed by the usage route)."""
    total = 0
    with admin(server) as a:
        for key_id in key_ids:
            total += a.get(f"/admin/keys/{key_id}/usage").json()["totals"]["cost_micro_dollars"]
    conn = sqlite3.connect(server.dir / "data" / "ensemble.db")
    try:
        placeholders = ",".join("?" * len(key_ids))
        (in_db,) = conn.execute(
            f"SELECT coalesce(sum(cost_micro_dollars), 0) FROM usage_daily WHERE key_id IN ({placeholders})",
            key_ids,
        ).fetchone()
    finally:
        conn.close()
    assert in_db == total
    return total


def burst(url: str, keys: list[str], n: int, concurrency: int, path: str = "/api/v1/generate") -> list[int]:
    def one(i: int) -> int:
        r = client.post(url + path, json=REQUEST, headers={"authorization": f"Bearer {keys[i % len(keys)]}"})
        assert r.status_code in (200, 402), r.text
        if r.status_code == 402:
            err = r.json()["error"]
            assert err["type"] == "budget_exceeded" and err["code"] == "budget_exceeded", err
        return r.status_code

    # One client for every thread (httpx's is thread-safe): building one per request costs more
    # than the request.
    with (
        httpx.Client(timeout=30, limits=httpx.Limits(max_connections=concurrency)) as client,
        ThreadPoolExecutor(concurrency) as pool,
    ):
        return list(pool.map(one, range(n)))


def test_concurrent_requests_never_spend_past_a_key_budget(server: Ensemble) -> None:
    budget = Decimal("0.004")  # buys 20 answers of 200 micro-dollars
    key, key_id = new_key(server, budget_usd=str(budget), budget_period="day")
    codes = burst(server.url, [key], n=120, concurrency=16)
    spent = durable_spend(server, [key_id])
    could_buy = int(budget * 1_000_000) // real_cost_micro()
    assert codes.count(402) > 0
    assert spent <= budget * 1_000_000, (spent, codes.count(200))
    assert spent == codes.count(200) * real_cost_micro()
    assert codes.count(200) >= 0.8 * could_buy, (codes.count(200), could_buy)
    record = key_record(server, key_id)
    assert record["budget_usd"] == "0.004" and record["budget_period"] == "day"
    assert Decimal(record["spent_usd"]) * 1_000_000 == spent
    assert record["budget_resets_at"].endswith("T00:00:00Z")
    # Usage by the periods budgets count in, with the budget's state alongside.
    with admin(server) as a:
        usage = a.get(f"/admin/keys/{key_id}/usage").json()
    today = datetime.now(UTC)
    week = "{}-W{:02d}".format(*today.isocalendar()[:2])
    assert usage["by_month"][today.strftime("%Y-%m")]["cost_micro_dollars"] == spent
    assert usage["by_week"][week]["cost_micro_dollars"] == spent
    assert usage["budget"]["budget_usd"] == "0.004" and usage["budget"]["spent_usd"] == record["spent_usd"]


def test_a_customer_budget_is_shared_by_its_keys(server: Ensemble) -> None:
    with admin(server) as a:
        r = a.post("/admin/customers", json={"name": "acme", "budget_usd": "0.003", "budget_period": "month"})
        assert r.status_code == 201, r.text
        customer = r.json()
        assert customer["budget_usd"] == "0.003" and customer["spent_usd"] == "0"
    cid = customer["customer_id"]
    # Each key alone could spend more than the customer's budget: the customer's ceiling binds.
    k1, id1 = new_key(server, customer_id=cid, budget_usd="1")
    k2, id2 = new_key(server, customer_id=cid)
    codes = burst(server.url, [k1, k2], n=60, concurrency=12)
    spent = durable_spend(server, [id1, id2])
    assert codes.count(402) > 0
    assert spent <= 3000
    assert codes.count(200) >= 0.8 * (3000 // real_cost_micro())
    with admin(server) as a:
        view = a.get(f"/admin/customers/{cid}").json()
        assert Decimal(view["spent_usd"]) * 1_000_000 == spent
        # Raising the budget lets the same keys spend again, at once.
        r = a.put(f"/admin/customers/{cid}", json={"budget_usd": "0.01"})
        assert r.status_code == 200 and r.json()["budget_usd"] == "0.01"
    with httpx.Client(timeout=30) as c:
        r = c.post(server.url + "/api/v1/generate", json=REQUEST, headers={"authorization": f"Bearer {k2}"})
        assert r.status_code == 200, r.text


def test_a_stream_that_costs_less_than_its_reservation_frees_the_rest(server: Ensemble) -> None:
    # max_tokens 4000 reserves ~0.04 USD; the answer uses 20 tokens. With a 0.05 budget a second
    # such request fits only if the first one's unused reservation came back.
    key, key_id = new_key(server, budget_usd="0.05", budget_period="total")
    big = {**REQUEST, "max_tokens": 4000, "stream": True}
    with httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {key}"}, timeout=30) as c:
        for _ in range(3):
            with c.stream("POST", "/api/v1/stream", json=big) as r:
                assert r.status_code == 200
                body = b"".join(r.iter_bytes())
            assert b"event: done" in body
    spent = durable_spend(server, [key_id])
    assert 0 < spent < 3 * 250  # three short answers (21 words each), nowhere near their reservations
    record = key_record(server, key_id)
    assert Decimal(record["spent_usd"]) * 1_000_000 == spent
    assert record["budget_resets_at"] is None  # a total budget never resets
    assert Decimal(record["remaining_usd"]) * 1_000_000 == 50_000 - spent


def exhausted_key(server: Ensemble) -> str:
    """A key whose budget cannot pay for even one request."""
    key, _ = new_key(server, budget_usd="0.0001")
    return key


def test_402_in_each_format_says_what_is_left_and_when_it_resets(server: Ensemble) -> None:
    key = exhausted_key(server)
    left = re.compile(r"0\.0001 USD left of 0\.0001 USD \(month\).*resets at \d{4}-\d{2}-01T00:00:00Z")

    r = httpx.post(server.url + "/api/v1/generate", json=REQUEST, headers={"authorization": f"Bearer {key}"})
    assert r.status_code == 402
    err = r.json()["error"]
    assert err["type"] == "budget_exceeded" and err["code"] == "budget_exceeded"
    assert err["remaining_usd"] == "0.0001" and err["resets_at"].endswith("T00:00:00Z")
    assert left.search(err["message"]), err["message"]

    oa = openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)
    with pytest.raises(openai.APIStatusError) as oe:
        oa.chat.completions.create(
            model="mock-1", messages=[{"role": "user", "content": PROMPT}], max_tokens=MAX_TOKENS
        )
    assert oe.value.status_code == 402
    assert oe.value.body["type"] == "budget_exceeded" and oe.value.body["code"] == "budget_exceeded"  # type: ignore[index]
    assert left.search(oe.value.body["message"])  # type: ignore[index]

    an = anthropic.Anthropic(base_url=server.url, api_key=key, max_retries=0)
    with pytest.raises(anthropic.APIStatusError) as ae:
        an.messages.create(
            model="mock-1", max_tokens=MAX_TOKENS, messages=[{"role": "user", "content": PROMPT}]
        )
    assert ae.value.status_code == 402
    assert ae.value.body["type"] == "error"  # type: ignore[index]
    assert ae.value.body["error"]["type"] == "budget_exceeded"  # type: ignore[index]
    assert left.search(ae.value.body["error"]["message"])  # type: ignore[index]
    # Streaming too: refused before the stream starts, as a plain HTTP error.
    with (
        pytest.raises(anthropic.APIStatusError) as se,
        an.messages.stream(
            model="mock-1", max_tokens=MAX_TOKENS, messages=[{"role": "user", "content": PROMPT}]
        ) as stream,
    ):
        stream.until_done()
    assert se.value.status_code == 402

    gm = genai.Client(
        api_key=key, http_options=genai_types.HttpOptions(base_url=server.url, api_version="v1beta")
    )
    with pytest.raises(genai_errors.ClientError) as ge:
        gm.models.generate_content(
            model="mock-1",
            contents=PROMPT,
            config=genai_types.GenerateContentConfig(max_output_tokens=MAX_TOKENS),
        )
    assert ge.value.code == 402
    details = ge.value.details["error"]
    assert details["status"] == "RESOURCE_EXHAUSTED"
    assert details["details"][0]["reason"] == "BUDGET_EXCEEDED"
    assert left.search(details["message"])


def test_budget_fields_are_validated_by_name(server: Ensemble) -> None:
    with admin(server) as a:
        for bad, field in (
            ({"name": "x", "budget_usd": "ten"}, "budget_usd"),
            ({"name": "x", "budget_usd": "-1"}, "budget_usd"),
            ({"name": "x", "budget_usd": "0.0000001"}, "budget_usd"),
            ({"name": "x", "budget_usd": 5}, "budget_usd"),
            ({"name": "x", "budget_period": "year"}, "budget_period"),
        ):
            r = a.post("/admin/keys", json=bad)
            assert r.status_code == 400, (bad, r.text)
            assert field in r.text
        # null removes a budget
        _, key_id = new_key(server, budget_usd="2.5")
        r = a.put(f"/admin/keys/{key_id}/config", json={"budget_usd": None})
        assert r.status_code == 200 and r.json()["budget_usd"] is None


def test_cli_creates_keys_and_customers_with_budgets(server: Ensemble) -> None:
    out = server.cli("customers", "create", "--name", "cli-co", "--budget", "12.5", "--budget-period", "week")
    cid = out.stdout.strip()
    assert cid.startswith("cus_")
    key = server.cli(
        "keys", "create", "--name", "cli-key", "--customer", cid, "--budget", "3", "--budget-period", "day"
    ).stdout.strip()
    listed = server.cli("customers", "list", "--json").stdout
    assert f'"customer_id":"{cid}"' in listed and '"budget_usd":"12.5"' in listed and '"week"' in listed
    keys_json = server.cli("keys", "list", "--json").stdout
    assert '"budget_usd":"3"' in keys_json and '"budget_period":"day"' in keys_json
    bad = server.cli("keys", "create", "--name", "bad", "--budget", "lots", check=False)
    assert bad.returncode != 0 and "--budget" in bad.stderr
    assert (
        httpx.post(
            server.url + "/api/v1/generate", json=REQUEST, headers={"authorization": f"Bearer {key}"}
        ).status_code
        == 200
    )


def test_metrics_show_spend_and_what_is_left_per_budget(server: Ensemble) -> None:
    key, key_id = new_key(server, budget_usd="0.5")
    with httpx.Client(timeout=30) as c:
        assert (
            c.post(
                server.url + "/api/v1/generate", json=REQUEST, headers={"authorization": f"Bearer {key}"}
            ).status_code
            == 200
        )
    refused = exhausted_key(server)
    assert (
        httpx.post(
            server.url + "/api/v1/generate", json=REQUEST, headers={"authorization": f"Bearer {refused}"}
        ).status_code
        == 402
    )
    remaining = re.compile(rf'ensemble_budget_remaining_usd\{{id="{key_id}",scope="key"\}} (\S+)')
    spent = re.compile(rf'ensemble_budget_spent_usd\{{id="{key_id}",scope="key"\}} (\S+)')

    def metrics() -> str:
        with admin(server) as a:
            return a.get("/metrics").text

    def sampled() -> tuple[float, float, str] | None:
        """The gauges once the sampler (every second) has seen the request's spend."""
        text = metrics()
        left, used = remaining.search(text), spent.search(text)
        if left is None or used is None or float(used.group(1)) == 0:
            return None
        return float(left.group(1)), float(used.group(1)), text

    left, used, text = wait_until(sampled, timeout=10)
    assert 0 < used < 0.001 and left == pytest.approx(0.5 - used)
    assert re.search(r'ensemble_budget_exceeded_total\{scope="key"\} [1-9]', text)


def test_websocket_requests_are_reserved_and_settled_like_any_other(server: Ensemble) -> None:
    key, key_id = new_key(server, budget_usd="0.0021")  # ten answers of 202, and one reservation short

    async def run() -> list[dict[str, Any]]:
        async with websockets.connect(server.url.replace("http", "ws") + "/api/v1/ws") as ws:
            await ws.send(orjson.dumps({"type": "auth", "api_key": key}).decode())
            assert orjson.loads(await ws.recv()) == {"type": "ready"}
            out = []
            for i in range(12):  # one at a time: each settles before the next is admitted
                await ws.send(orjson.dumps({"type": "request", "request_id": f"w{i}", **REQUEST}).decode())
                while True:
                    msg = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
                    if msg["type"] in ("done", "error"):
                        out.append(msg)
                        break
            return out

    answers = asyncio.run(run())
    done = [m for m in answers if m["type"] == "done"]
    refused = [m for m in answers if m["type"] == "error"]
    assert len(done) == 10 and refused, answers
    assert all(m["error"]["code"] == "budget_exceeded" for m in refused)
    assert durable_spend(server, [key_id]) == 10 * real_cost_micro() <= 2100


def test_batch_items_past_the_budget_are_errored_budget_exceeded(server: Ensemble) -> None:
    key, key_id = new_key(
        server, budget_usd="0.001"
    )  # four answers of 202 (a fifth reservation does not fit)
    with httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {key}"}, timeout=30) as c:
        items = [{"custom_id": f"b{i}", **REQUEST} for i in range(8)]
        r = c.post("/api/v1/batch", json={"requests": items})
        assert r.status_code == 200, r.text
        batch_id = r.json()["batch_id"]
        wait_until(lambda: c.get(f"/api/v1/batch/{batch_id}").json()["status"] == "ended", timeout=20)
        lines = [orjson.loads(line) for line in c.get(f"/api/v1/batch/{batch_id}/results").text.splitlines()]
    kinds = [line["result"]["type"] for line in lines]
    assert kinds.count("succeeded") >= 3 and "errored" in kinds, kinds
    errors = [line["result"]["error"] for line in lines if line["result"]["type"] == "errored"]
    assert all("budget_exceeded" in orjson.dumps(e).decode() for e in errors), errors
    assert durable_spend(server, [key_id]) == kinds.count("succeeded") * real_cost_micro() <= 1000


def test_spend_survives_sigterm_and_a_restart(tmp_path: Path) -> None:
    first = Ensemble(tmp_path, providers=[PROVIDER], env={"ENSEMBLE_ADMIN_KEY": ADMIN})
    try:
        key, key_id = new_key(first, budget_usd="0.002", budget_period="month")
        codes = burst(first.url, [key], n=30, concurrency=4)
        served = codes.count(200)
        assert 0 < served < 30
    finally:
        assert first.stop() == 0  # SIGTERM: drains and flushes the request log
    again = Ensemble(tmp_path, providers=[PROVIDER], env={"ENSEMBLE_ADMIN_KEY": ADMIN}, key=False)
    try:
        record = key_record(again, key_id)
        assert (
            Decimal(record["spent_usd"]) * 1_000_000 == served * real_cost_micro()
        )  # nothing lost or doubled
        r = httpx.post(
            again.url + "/api/v1/generate", json=REQUEST, headers={"authorization": f"Bearer {key}"}
        )
        assert r.status_code == 402, r.text  # the restarted server knows the budget is spent
    finally:
        again.stop()


def test_a_failed_over_request_is_reserved_at_the_dearest_rate_and_charged_once(
    tmp_path: Path, fake: FakeUpstream
) -> None:
    # The same model on a cheap provider tried first and a dear one behind it.
    cheap = openai_provider(fake.endpoint_url("cheap"), name="cheap", models=["gpt-4o"], priority=1)
    dear = openai_provider(fake.endpoint_url("dear"), name="dear", models=["gpt-4o"], priority=2)
    dear["models"][0]["pricing"] = {"input": 5.0, "output": 20.0}
    s = Ensemble(tmp_path, providers=[cheap, dear], env={"ENSEMBLE_ADMIN_KEY": ADMIN})
    try:
        key, key_id = new_key(s, budget_usd="1")
        ask = {"model": "gpt-4o", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 50}
        fake.enqueue("cheap", {"status": 500, "count": 1})  # the first attempt fails: failover
        with httpx.Client(base_url=s.url, headers={"authorization": f"Bearer {key}"}, timeout=30) as c:
            r = c.post("/api/v1/generate", json=ask)
            assert r.status_code == 200 and r.json()["provider"] == "dear", r.text
            answered = r.json()["cost_micro_dollars"]
            r = c.post("/api/v1/generate", json=ask)  # the cheap one again
            assert r.status_code == 200 and r.json()["provider"] == "cheap", r.text
            answered += r.json()["cost_micro_dollars"]
        spent = durable_spend(s, [key_id])
        assert spent == answered > 0  # the failed attempt cost nothing, each answer counted once
        assert Decimal(key_record(s, key_id)["spent_usd"]) * 1_000_000 == spent
        # The worst case is priced at the dearest candidate: a budget that covers a request only at
        # the cheap rate refuses it, since failover could land it on the dear one.
        tight, _ = new_key(s, budget_usd="0.0012")  # 50 output tokens: 0.0005 cheap, 0.001 dear (+ prompt)
        r = httpx.post(s.url + "/api/v1/generate", json=ask, headers={"authorization": f"Bearer {tight}"})
        assert r.status_code == 402, r.text
    finally:
        s.stop()


def test_the_rate_limit_fallback_gives_the_reservation_back_and_reserves_again_when_it_runs(
    tmp_path: Path, fake: FakeUpstream
) -> None:
    fake.configure("limited", latency_ms=0)
    fake.enqueue("limited", {"status": 529, "retry_after": 1})  # every endpoint exhausted: queued
    s = Ensemble(
        tmp_path,
        providers=[openai_provider(fake.endpoint_url("limited"), models=["gpt-4o"])],
        config={"batch": {"rate_limit_fallback": True, "collection_window": "1s", "max_batch_size": 10}},
        env={"ENSEMBLE_ADMIN_KEY": ADMIN},
    )
    try:
        # One worst case (about 0.0006 USD) fits, two do not: the queued run can only be admitted
        # if the refused attempt's reservation came back.
        key, key_id = new_key(s, budget_usd="0.0009")
        ask = {
            "model": "gpt-4o",
            "messages": [{"role": "user", "content": "please queue me"}],
            "max_tokens": 50,
        }
        with httpx.Client(base_url=s.url, headers={"authorization": f"Bearer {key}"}, timeout=30) as c:
            r = c.post("/api/v1/generate", json=ask, headers={"prefer": "respond-async"})
            assert r.status_code == 202, r.text
            status_url = r.json()["status_url"]
            wait_until(lambda: c.get(status_url).json()["status"] in ("completed", "failed"), timeout=20)
            assert c.get(status_url).json()["status"] == "completed", c.get(r.json()["retrieve_url"]).text
            cost = c.get(r.json()["retrieve_url"]).json()["cost_micro_dollars"]
        assert durable_spend(s, [key_id]) == cost > 0  # charged once, for the run that answered
    finally:
        s.stop()


def test_embeddings_are_reserved_and_charged_like_any_request(server: Ensemble) -> None:
    key, key_id = new_key(server, budget_usd="0.01")
    oa = openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)
    served, refused = 0, []
    for _ in range(40):
        try:
            oa.embeddings.create(model="mock-embed", input="embed me, please")
            served += 1
        except openai.APIStatusError as e:
            refused.append(e)
    assert served > 0 and refused, served
    assert all(e.status_code == 402 and e.body["code"] == "budget_exceeded" for e in refused)  # type: ignore[index]
    spent = durable_spend(server, [key_id])
    assert 0 < spent <= 10_000
    assert Decimal(key_record(server, key_id)["spent_usd"]) * 1_000_000 == spent
