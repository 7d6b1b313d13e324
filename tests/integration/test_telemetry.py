"""Observability end to end: `/metrics` after known traffic (exact counts, one and two workers) and
an OpenTelemetry trace received by an OTLP/HTTP receiver running inside the test."""

from __future__ import annotations

import http.server
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec
import orjson
import pytest
import redis as redis_client
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from prometheus_client.parser import text_string_to_metric_families

from ensemble.storage import keysync
from ensemble.storage.keysync import WireKey
from support.ensemble import MOCK_PROVIDER, Ensemble, openai_provider
from support.fake import FakeUpstream
from support.records import key_record
from support.shared import RedisServer
from support.waiting import wait_until

pytestmark = pytest.mark.integration

ADMIN = "admin-secret-for-metrics"
HELLO = [{"role": "user", "content": "count me in please"}]


def scrape(server: Ensemble) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    r = httpx.get(f"{server.url}/metrics", headers={"authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def test_metrics_count_known_traffic_exactly(tmp_path: Path, fake: FakeUpstream) -> None:
    fake.configure("m-a", latency_ms=0)
    fake.configure("m-b", latency_ms=0)
    # Two providers serve gpt-4o; the first (priority 1) is tried first.
    first = openai_provider(fake.endpoint_url("m-a"), name="openai", models=["gpt-4o"], priority=1)
    second = openai_provider(fake.endpoint_url("m-b"), name="backup", models=["gpt-4o"], priority=2)
    server = Ensemble(tmp_path, providers=[MOCK_PROVIDER, first, second], env={"ENSEMBLE_ADMIN_KEY": ADMIN})
    try:
        limited = server.create_key("limited", "--rpm", "1")
        server.wait_for_key(limited)
        tokens: dict[tuple[str, str], int] = {}
        cost: dict[str, int] = {}

        def account(body: dict[str, Any]) -> None:
            for kind, field in (("input", "input_tokens"), ("output", "output_tokens")):
                tokens[(body["model"], kind)] = tokens.get((body["model"], kind), 0) + body[field]
            cost[body["model"]] = cost.get(body["model"], 0) + body["cost_micro_dollars"]

        with server.client() as c:
            for _ in range(3):
                r = c.post("/api/v1/generate", json={"model": "mock-1", "messages": HELLO})
                assert r.status_code == 200
                account(r.json())
            r = c.post("/api/v1/stream", json={"model": "mock-1", "messages": HELLO})
            assert r.status_code == 200
            done = [f for f in r.text.split("\n\n") if f.startswith("event: done")]
            account(orjson.loads(done[0].split("data: ", 1)[1]))
            assert c.post("/api/v1/generate", json={"model": "nope", "messages": HELLO}).status_code == 404
            # The first provider fails once with a 500; the gateway fails over to the second.
            fake.enqueue("m-a", {"status": 500})
            r = c.post("/api/v1/generate", json={"model": "gpt-4o", "messages": HELLO})
            assert r.status_code == 200, r.text
            account(r.json())
        assert httpx.post(f"{server.url}/api/v1/generate", json={}).status_code == 401
        with server.client(limited) as c:
            r = c.post("/api/v1/generate", json={"model": "mock-1", "messages": HELLO})
            assert r.status_code == 200
            account(r.json())
            assert c.post("/api/v1/generate", json={"model": "mock-1", "messages": HELLO}).status_code == 429

        s = scrape(server)
        req = "ensemble_requests_total"
        gen = "/api/v1/generate"
        assert value(s, req, route=gen, model="mock-1", provider="mock", status="200") == 4
        assert value(s, req, route="/api/v1/stream", model="mock-1", provider="mock", status="200") == 1
        assert value(s, req, route=gen, model="gpt-4o", provider="backup", status="200") == 1
        assert value(s, req, route=gen, model="", provider="", status="404") == 1  # unknown model: no label
        assert value(s, req, route=gen, model="", provider="", status="401") == 1
        assert value(s, req, route=gen, model="mock-1", provider="", status="429") == 1
        assert total(s, req, route=gen) == 8
        hist = "ensemble_request_duration_seconds_count"
        assert value(s, hist, route=gen, model="mock-1", provider="mock", status="200") == 4
        assert value(s, "ensemble_proxy_overhead_seconds_count", provider="mock") == 5
        assert value(s, "ensemble_proxy_overhead_seconds_count", provider="backup") == 1
        for (model, kind), n in tokens.items():
            provider = "backup" if model == "gpt-4o" else "mock"
            assert value(s, "ensemble_tokens_total", model=model, provider=provider, kind=kind) == n, (
                model,
                kind,
            )
        for model, micro in cost.items():
            provider = "backup" if model == "gpt-4o" else "mock"
            assert value(s, "ensemble_cost_micro_dollars_total", model=model, provider=provider) == micro
        assert total(s, "ensemble_rate_limit_rejections_total") == 1
        # exactly one failed attempt, a server error on the first provider's endpoint
        assert total(s, "ensemble_upstream_errors_total") == 1
        labels = {"provider": "openai", "endpoint": "openai-primary", "class": "server_error"}
        assert value(s, "ensemble_upstream_errors_total", **labels) == 1
        assert value(s, "ensemble_open_streams") == 0
        assert value(s, "ensemble_request_log_dropped_total") == 0
        assert ("ensemble_redis_sync_lag_seconds", frozenset()) in s
    finally:
        server.stop()


def test_redis_sync_lag_is_measured_when_a_key_change_arrives(tmp_path: Path) -> None:
    """The gauge carries a key change's publish-to-apply time, through a real redis-server: a change
    published (as another instance would) 2 s before it reaches the channel shows a lag of 2 s."""
    redis = RedisServer()
    ns = "lag-test"
    server = Ensemble(
        tmp_path,
        config={"redis": {"address": redis.address, "namespace": ns}},
        env={"ENSEMBLE_ADMIN_KEY": ADMIN},
    )
    name = "ensemble_redis_sync_lag_seconds"
    try:
        # A change through the admin API is applied by this instance's own subscriber: a real lag.
        r = httpx.post(
            f"{server.url}/admin/keys", json={"name": "lag"}, headers={"authorization": f"Bearer {ADMIN}"}
        )
        assert r.status_code == 201 and "warning" not in r.headers, r.text
        assert 0 < wait_until(lambda: value(scrape(server), name), what="a measured sync lag") < 2
        # A late delivery: its lag is the time since it was published, and the next quick rate-limit
        # settle does not hide it.
        late = WireKey(digest="ab" * 32, record=key_record(key_id="key_late"), published_at=time.time() - 2.0)
        client = redis_client.Redis(host="127.0.0.1", port=redis.port)
        client.publish(keysync.channel_name(ns), msgspec.json.encode(late))
        client.close()
        lag = wait_until(
            lambda: (v := value(scrape(server), name)) >= 2.0 and v, what="the late change's lag"
        )
        assert lag < 10
    finally:
        server.stop()
        redis.stop()


def test_metrics_aggregate_across_workers(tmp_path: Path) -> None:
    server = Ensemble(tmp_path, workers=2, env={"ENSEMBLE_ADMIN_KEY": ADMIN})
    try:
        headers = {"authorization": f"Bearer {server.key}"}
        for _ in range(20):  # a new connection each: the kernel spreads them over both workers
            r = httpx.post(
                f"{server.url}/api/v1/generate", json={"model": "mock-1", "messages": HELLO}, headers=headers
            )
            assert r.status_code == 200
        # Whichever worker answers the scrape reports all 20.
        for _ in range(4):
            s = scrape(server)
            assert (
                value(
                    s,
                    "ensemble_requests_total",
                    route="/api/v1/generate",
                    model="mock-1",
                    provider="mock",
                    status="200",
                )
                == 20
            )
            assert value(s, "ensemble_open_streams") == 0
    finally:
        server.stop()


def test_metrics_need_the_admin_key(mock_gateway: Ensemble) -> None:
    # mock_gateway runs without ENSEMBLE_ADMIN_KEY: the admin surface is disabled
    assert httpx.get(f"{mock_gateway.url}/metrics").status_code == 503


def test_metrics_refuse_a_wrong_admin_key(tmp_path: Path) -> None:
    server = Ensemble(tmp_path, env={"ENSEMBLE_ADMIN_KEY": ADMIN})
    try:
        assert httpx.get(f"{server.url}/metrics").status_code == 401
        bad = httpx.get(f"{server.url}/metrics", headers={"authorization": "Bearer nope"})
        assert bad.status_code == 401 and ADMIN not in bad.text
        with server.client() as c:  # a client key is not an admin key
            assert c.get("/metrics").status_code == 401
    finally:
        server.stop()


class OtlpReceiver:
    """A minimal OTLP/HTTP trace receiver: decodes each protobuf export into spans."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                export = ExportTraceServiceRequest()
                export.ParseFromString(body)
                with receiver.lock:
                    for rs in export.resource_spans:
                        service = {a.key: a.value.string_value for a in rs.resource.attributes}
                        for ss in rs.scope_spans:
                            for span in ss.spans:
                                receiver.spans.append(
                                    {
                                        "path": self.path,
                                        "service": service.get("service.name"),
                                        "name": span.name,
                                        "trace_id": span.trace_id.hex(),
                                        "span_id": span.span_id.hex(),
                                        "parent": span.parent_span_id.hex(),
                                        "kind": span.kind,
                                        "attributes": {
                                            a.key: getattr(a.value, a.value.WhichOneof("value"))
                                            for a in span.attributes
                                        },
                                    }
                                )
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_trace_exported_over_otlp(tmp_path: Path) -> None:
    receiver = OtlpReceiver()
    server = Ensemble(tmp_path, config={"telemetry": {"otlp_endpoint": receiver.url}})
    try:
        with server.client() as c:
            r = c.post(
                "/api/v1/generate",
                json={"model": "mock-1", "messages": HELLO},
                headers={"x-request-id": "req-traced-1"},
            )
            assert r.status_code == 200
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with receiver.lock:
                mine = [
                    s for s in receiver.spans if s["attributes"].get("ensemble.request_id") == "req-traced-1"
                ]
            if any(s["name"] == "POST /api/v1/generate" for s in mine):
                break
            time.sleep(0.2)
        with receiver.lock:
            spans = list(receiver.spans)
    finally:
        server.stop()
        receiver.close()
    root = next(s for s in spans if s["name"] == "POST /api/v1/generate")
    assert root["path"] == "/v1/traces" and root["service"] == "ensemble"
    assert root["parent"] == "" and root["kind"] == 2  # SPAN_KIND_SERVER
    attrs = root["attributes"]
    assert attrs["ensemble.request_id"] == "req-traced-1"
    assert attrs["http.route"] == "/api/v1/generate" and attrs["http.response.status_code"] == 200
    assert attrs["ensemble.model"] == "mock-1" and attrs["ensemble.provider"] == "mock"
    children = {s["name"]: s for s in spans if s["trace_id"] == root["trace_id"] and s is not root}
    assert set(children) == {"ensemble.route", "ensemble.upstream"}
    for child in children.values():
        assert child["parent"] == root["span_id"]
    assert children["ensemble.route"]["attributes"]["ensemble.request_id"] == "req-traced-1"
    assert children["ensemble.route"]["attributes"]["ensemble.candidates"] == 1
    assert children["ensemble.upstream"]["attributes"]["ensemble.endpoint"] == "mock-local"
    assert children["ensemble.upstream"]["kind"] == 3  # SPAN_KIND_CLIENT
