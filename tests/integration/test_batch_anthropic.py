"""Anthropic models in batches go through the provider's Message Batches API (the project's fake
upstream implements it): submit, poll, results, cancel, a restart in the middle, the 50% discount,
and Ensemble's own `/v1/messages/batches` routes driven by the official `anthropic` SDK."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Any

import anthropic
import httpx
import orjson
import pytest

from support.ensemble import Ensemble
from support.fake import FakeUpstream
from support.waiting import wait_until

pytestmark = pytest.mark.integration

MODEL = "claude-sonnet-4-6"


def anthropic_provider(base_url: str) -> dict[str, Any]:
    return {
        "name": "anthropic",
        "type": "anthropic",
        "base_url": base_url,
        "endpoints": [{"id": "anthropic-primary", "api_key": "sk-ant-test-upstream-0000"}],
        "models": [{"name": MODEL, "max_output_tokens": 8192, "pricing": {"input": 2.0, "output": 4.0}}],
    }


def params(text: str) -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": 200, "messages": [{"role": "user", "content": text}]}


def upstream_calls(
    fake: FakeUpstream, endpoint: str, suffix: str, method: str = "POST"
) -> list[dict[str, Any]]:
    return [r for r in fake.requests(endpoint) if r["method"] == method and r["path"].endswith(suffix)]


def wait_for(predicate: Any, what: str) -> Any:
    return wait_until(predicate, timeout=20, what=what)  # provider batches take seconds, not ms


def test_sdk_submit_poll_results_with_the_batch_discount(tmp_path: Path, fake: FakeUpstream) -> None:
    fake.configure("anth", batch_delay_ms=800)
    server = Ensemble(tmp_path, providers=[anthropic_provider(fake.endpoint_url("anth"))])
    clients: list[anthropic.Anthropic] = []
    try:
        client = anthropic.Anthropic(base_url=server.url, api_key=server.key, max_retries=0)
        clients.append(client)
        batch = client.messages.batches.create(
            requests=[
                {"custom_id": "first", "params": params("tell me about batches")},  # type: ignore[list-item]
                {"custom_id": "second", "params": params("and about discounts")},  # type: ignore[list-item]
            ]
        )
        assert batch.id.startswith("msgbatch_") and batch.type == "message_batch"
        assert batch.processing_status == "in_progress" and batch.results_url is None

        ended = wait_for(
            lambda: (b := client.messages.batches.retrieve(batch.id)).processing_status == "ended" and b,
            what="the batch to end",
        )
        assert ended.request_counts.succeeded == 2 and ended.request_counts.processing == 0
        results = {r.custom_id: r.result for r in client.messages.batches.results(batch.id)}
        assert set(results) == {"first", "second"}
        for result in results.values():
            assert result.type == "succeeded"
            assert result.message.role == "assistant" and result.message.content[0].type == "text"
            assert result.message.content[0].text  # type: ignore[union-attr]
        assert batch.id in [b.id for b in client.messages.batches.list(limit=10).data]

        # Upstream: one Message Batches create with both items (bodies built by the Anthropic adapter),
        # polled until ended, results fetched; no interactive /v1/messages call.
        creates = upstream_calls(fake, "anth", "/v1/messages/batches")
        assert len(creates) == 1
        sent = creates[0]["body"]["requests"]
        assert [r["params"]["messages"][0]["content"] for r in sent] == [
            [{"type": "text", "text": "tell me about batches"}],
            [{"type": "text", "text": "and about discounts"}],
        ]
        assert all(r["params"]["model"] == MODEL and r["params"]["max_tokens"] == 200 for r in sent)
        assert creates[0]["headers"]["x-api-key"] == "sk-ant-test-upstream-0000"
        assert upstream_calls(fake, "anth", "/results", method="GET")
        assert not upstream_calls(fake, "anth", "/v1/messages")

        # The native view of the same batch: responses priced at half the model's price.
        with server.client() as c:
            lines = [orjson.loads(x) for x in c.get(f"/api/v1/batch/{batch.id}/results").text.splitlines()]
            for line in lines:
                r = line["result"]["response"]
                assert r["provider"] == "anthropic" and r["endpoint_id"] == "anthropic-primary"
                full = 2 * r["input_tokens"] + 4 * r["output_tokens"]  # $2 / $4 per million, in micro-dollars
                assert full > 0 and r["cost_micro_dollars"] == full // 2
                assert r["cost_micro_dollars"] == round(full / 2)
                # recorded once as an ordinary request: retrievable by its id
                assert (
                    c.get(f"/api/v1/retrieve/{r['id']}").json()["cost_micro_dollars"]
                    == r["cost_micro_dollars"]
                )
        # The request log (flushed by those retrieves) says how the items were routed.
        ids = [line["result"]["response"]["id"] for line in lines]
        with sqlite3.connect(tmp_path / "data" / "ensemble.db") as db:
            routes = db.execute(
                f"SELECT route_reason FROM request_log WHERE request_id IN ({','.join('?' * len(ids))})", ids
            ).fetchall()
        assert routes == [("provider_batch",)] * 2

        other = server.create_key("other")
        server.wait_for_key(other)
        intruder = anthropic.Anthropic(base_url=server.url, api_key=other, max_retries=0)
        clients.append(intruder)
        with pytest.raises(anthropic.NotFoundError):
            intruder.messages.batches.retrieve(batch.id)
        assert intruder.messages.batches.list().data == []
    finally:
        for cl in clients:
            cl.close()
        server.stop()


def test_cancel_reaches_the_provider_batch(tmp_path: Path, fake: FakeUpstream) -> None:
    fake.configure("anth-c", batch_delay_ms=60_000)
    server = Ensemble(tmp_path, providers=[anthropic_provider(fake.endpoint_url("anth-c"))])
    closer = contextlib.ExitStack()
    try:
        client = anthropic.Anthropic(base_url=server.url, api_key=server.key, max_retries=0)
        closer.callback(client.close)
        batch = client.messages.batches.create(
            requests=[{"custom_id": f"c{i}", "params": params(f"cancel me {i}")} for i in range(3)]  # type: ignore[misc]
        )
        wait_for(lambda: upstream_calls(fake, "anth-c", "/v1/messages/batches"), what="the provider batch")
        early = httpx.get(  # results only once it has ended (the SDK checks results_url itself)
            f"{server.url}/v1/messages/batches/{batch.id}/results", headers={"x-api-key": server.key}
        )
        assert early.status_code == 400 and early.json()["error"]["type"] == "invalid_request_error"
        canceled = client.messages.batches.cancel(batch.id)
        assert (
            canceled.processing_status in ("canceling", "ended") and canceled.cancel_initiated_at is not None
        )
        ended = wait_for(
            lambda: (b := client.messages.batches.retrieve(batch.id)).processing_status == "ended" and b,
            what="the canceled batch to end",
        )
        assert ended.request_counts.canceled == 3
        assert {r.result.type for r in client.messages.batches.results(batch.id)} == {"canceled"}
        assert len(upstream_calls(fake, "anth-c", "/cancel")) == 1
    finally:
        closer.close()
        server.stop()


def test_restart_while_the_provider_batch_runs(tmp_path: Path, fake: FakeUpstream) -> None:
    """Stop Ensemble after the provider accepted the batch; a new Ensemble on the same database
    resumes polling the same provider batch (not a second one) and the results arrive."""
    fake.configure("anth-r", batch_delay_ms=2500)
    providers = [anthropic_provider(fake.endpoint_url("anth-r"))]
    server = Ensemble(tmp_path, providers=providers)
    key = server.key
    with server.client() as c:
        r = c.post(
            "/api/v1/batch",
            json={
                "requests": [
                    {
                        "custom_id": f"r{i}",
                        "model": MODEL,
                        "messages": [{"role": "user", "content": f"restart {i}"}],
                    }
                    for i in range(4)
                ]
            },
        )
        assert r.status_code == 200, r.text
        batch_id = r.json()["batch_id"]
        wait_for(lambda: upstream_calls(fake, "anth-r", "/v1/messages/batches"), what="the provider batch")
        assert c.get(f"/api/v1/batch/{batch_id}").json()["status"] == "in_progress"
    assert server.stop() == 0

    again = Ensemble(tmp_path, providers=providers, key=False)
    try:
        with again.client(key) as c:
            ended = wait_for(
                lambda: (b := c.get(f"/api/v1/batch/{batch_id}").json())["status"] == "ended" and b,
                what="the batch to end after the restart",
            )
            assert ended["request_counts"]["succeeded"] == 4
            lines = [orjson.loads(x) for x in c.get(f"/api/v1/batch/{batch_id}/results").text.splitlines()]
            assert [x["custom_id"] for x in lines] == ["r0", "r1", "r2", "r3"]
            assert all(
                x["result"]["type"] == "succeeded" and x["result"]["response"]["content"] for x in lines
            )
    finally:
        again.stop()
    assert len(upstream_calls(fake, "anth-r", "/v1/messages/batches")) == 1


def test_anthropic_shaped_errors(tmp_path: Path, fake: FakeUpstream) -> None:
    server = Ensemble(tmp_path, providers=[anthropic_provider(fake.endpoint_url("anth-e"))])
    try:
        headers = {"x-api-key": server.key, "anthropic-version": "2023-06-01"}
        r = httpx.post(
            f"{server.url}/v1/messages/batches", json={"requests": [{"custom_id": "a"}]}, headers=headers
        )
        assert r.status_code == 400
        body = r.json()
        assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
        assert "requests[0].params" in body["error"]["message"]
        r = httpx.get(f"{server.url}/v1/messages/batches/msgbatch_nope", headers=headers)
        assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
        r = httpx.get(f"{server.url}/v1/messages/batches?limit=0", headers=headers)
        assert r.status_code == 400 and "limit" in r.json()["error"]["message"]
        assert httpx.get(f"{server.url}/v1/messages/batches").status_code == 401
    finally:
        server.stop()


def test_rate_limit_fallback_for_an_anthropic_model_uses_the_batch_api(
    tmp_path: Path, fake: FakeUpstream
) -> None:
    fake.configure("anth-f", batch_delay_ms=300)
    fake.enqueue("anth-f", {"status": 429, "retry_after": 5})
    server = Ensemble(
        tmp_path,
        providers=[anthropic_provider(fake.endpoint_url("anth-f"))],
        config={"batch": {"collection_window": "500ms"}},
    )
    try:
        with server.client() as c:
            r = c.post(
                "/api/v1/generate",
                json={"model": MODEL, "messages": [{"role": "user", "content": "later"}]},
                headers={"prefer": "respond-async"},
            )
            assert r.status_code == 202, r.text
            request_id = r.json()["request_id"]
            assert r.headers["retry-after"] == "5"  # the upstream's retry-after is longer than the window
            done = wait_for(
                lambda: (s := c.get(f"/api/v1/status/{request_id}").json())["status"] == "completed" and s,
                what="the queued request to complete",
            )
            assert done["provider"] == "anthropic"
            answer = c.get(f"/api/v1/retrieve/{request_id}").json()
            full = 2 * answer["input_tokens"] + 4 * answer["output_tokens"]
            assert answer["content"] and answer["cost_micro_dollars"] == round(full / 2)  # batch price
        # one refused interactive call, then one Message Batches submission (not a second /v1/messages)
        assert [x["status"] for x in upstream_calls(fake, "anth-f", "/v1/messages")] == [429]
        assert len(upstream_calls(fake, "anth-f", "/v1/messages/batches")) == 1
    finally:
        server.stop()
