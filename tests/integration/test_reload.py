"""Config reload (docs/configuration.md#reloading-the-config) against real `ensemble serve` processes:
`ensemble reload` and SIGHUP re-read providers, models, prices and limits while requests are in
flight, keep every counter, refuse a broken config with every problem logged, and report settings
that need a restart. With two workers, both reload."""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from support.ensemble import Ensemble
from support.fake import FakeUpstream

HELLO = [{"role": "user", "content": "Hello there, reloading world"}]
UPSTREAM_KEY = "sk-test-upstream-key-000000"


def upstream(fake: FakeUpstream, input_price: float, extra_models: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "name": "up",
        "type": "openai",
        "endpoints": [{"id": "slow", "base_url": fake.endpoint_url("slow"), "api_key": UPSTREAM_KEY}],
        "models": [
            {"name": m, "upstream": "gpt-4o", "pricing": {"input": input_price, "output": 10.0}}
            for m in ("gpt-4o", *extra_models)
        ],
    }


def limited(fake: FakeUpstream) -> dict[str, Any]:
    return {
        "name": "lim",
        "type": "openai",
        "cooldown_after_failures": 1,
        "endpoints": [{"id": "limited", "base_url": fake.endpoint_url("limited"), "api_key": UPSTREAM_KEY}],
        "models": [{"name": "gpt-4o-lim", "upstream": "gpt-4o"}],
    }


def mock(input_price: float) -> dict[str, Any]:
    return {
        "name": "mock",
        "type": "mock",
        "mock": {"chunks": 4},
        "models": [{"name": "mock-1", "pricing": {"input": input_price, "output": 2.0}}],
    }


def write_provider(server: Ensemble, provider: dict[str, Any]) -> None:
    (server.dir / "providers" / f"{provider['name']}.yaml").write_text(yaml.safe_dump(provider))


def log_lines(server: Ensemble) -> list[dict[str, Any]]:
    out = []
    for line in server.process.output().splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
    return out


def reloads(server: Ensemble) -> list[dict[str, Any]]:
    return [e for e in log_lines(server) if "config reloaded from" in e["msg"]]


def reload_and_wait(server: Ensemble, workers: int = 1, cli: bool = True) -> None:
    """`ensemble reload`, or a plain SIGHUP to the pid in the data directory's pid file."""
    before = len(reloads(server))
    if cli:
        out = server.cli("reload")
        assert out.returncode == 0 and "sent SIGHUP to ensemble serve" in out.stdout, out
    else:
        os.kill(int((server.dir / "data" / "ensemble.pid").read_text()), signal.SIGHUP)
    server.process.wait_until(lambda: len(reloads(server)) >= before + workers)


def cost(input_tokens: int, output_tokens: int, input_price: float, output_price: float) -> Decimal:
    return (
        Decimal(input_tokens) * Decimal(str(input_price))
        + Decimal(output_tokens) * Decimal(str(output_price))
    ) / 1_000_000


@pytest.fixture(scope="module")
def server(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ensemble]:
    fake.configure("slow", chunk_gap_ms=150, chunks=16)  # a stream of about 2.5 s
    gateway = Ensemble(
        Path(tmp_path_factory.mktemp("reload")), [upstream(fake, 2.5), limited(fake), mock(1.0)]
    )
    yield gateway
    gateway.stop()


def test_a_stream_in_flight_finishes_and_the_next_request_pays_the_new_price(
    server: Ensemble, fake: FakeUpstream
) -> None:
    with server.client() as http:
        with http.stream(
            "POST",
            "/api/v1/stream",
            json={"model": "gpt-4o", "messages": HELLO},
            headers={"x-request-id": "rl-slow"},
        ) as s:
            lines = s.iter_lines()
            assert any(line.startswith("event: block") for line in lines)  # streaming has begun
            assert fake.requests("slow")[-1]["finished_at"] is None  # the upstream call is still running
            write_provider(server, upstream(fake, 5.0))
            reload_and_wait(server)
            rest = list(lines)
        done = json.loads(next(x for x in reversed(rest) if x.startswith("data: "))[6:])
        assert s.status_code == 200 and "event: done" in rest
        # The answer that was in flight is priced as it started.
        assert Decimal(done["cost"]) == cost(done["input_tokens"], done["output_tokens"], 2.5, 10.0)
        assert done["output_tokens"] == 16

        r = http.post("/api/v1/generate", json={"model": "gpt-4o", "messages": HELLO})
        assert r.status_code == 200, r.text
        after = r.json()
        assert Decimal(after["cost"]) == cost(after["input_tokens"], after["output_tokens"], 5.0, 10.0)
        models = {m["id"]: m for m in http.get("/api/v1/models").json()["models"]}
        assert models["gpt-4o"]["pricing"]["input"] == 5.0


def test_counters_survive_a_reload(server: Ensemble, fake: FakeUpstream) -> None:
    key = server.create_key("limited", "--rpm", "3")
    server.wait_for_key(key)
    generate = {"model": "mock-1", "messages": HELLO}
    with server.client(key) as http:
        assert [http.post("/api/v1/generate", json=generate).status_code for _ in range(3)] == [200] * 3
    # An endpoint that failed and said when to come back: it rests 30 s (its own cool-down, not
    # the rate-limit view of the provider's headers, which lives in the admission layer).
    fake.enqueue("limited", {"status": 503, "retry_after": 30})
    with server.client() as other:
        assert (
            other.post("/api/v1/generate", json={"model": "gpt-4o-lim", "messages": HELLO}).status_code >= 500
        )
        r = other.post("/api/v1/generate", json={"model": "gpt-4o-lim", "messages": HELLO})
        assert r.status_code == 503 and r.json()["error"]["code"] == "all_endpoints_failing", r.text
    called = len(fake.requests("limited"))

    write_provider(server, mock(3.0))
    reload_and_wait(server)

    with server.client(key) as http:
        r = http.post("/api/v1/generate", json=generate)
        assert r.status_code == 429 and r.json()["error"]["code"] == "key_rate_limited"  # its window is kept
    with server.client() as other:
        r = other.post("/api/v1/generate", json={"model": "gpt-4o-lim", "messages": HELLO})
        assert r.status_code == 503 and r.json()["error"]["code"] == "all_endpoints_failing"  # cool-down kept
    assert len(fake.requests("limited")) == called  # the cooling endpoint was not called again


def test_models_come_and_go_and_restart_only_settings_are_reported(
    server: Ensemble, fake: FakeUpstream
) -> None:
    config = yaml.safe_load(server.config_path.read_text())
    config["server"]["workers"] = 3
    config["database"]["path"] = str(server.dir / "elsewhere.db")
    server.config_path.write_text(yaml.safe_dump(config))
    write_provider(server, upstream(fake, 5.0, extra_models=("gpt-4o-new",)))
    (server.dir / "providers" / "mock.yaml").unlink()
    try:
        reload_and_wait(server, cli=False)  # the CLI would look for the pid file beside elsewhere.db
        with server.client() as http:
            assert (
                http.post("/api/v1/generate", json={"model": "gpt-4o-new", "messages": HELLO}).status_code
                == 200
            )
            r = http.post("/api/v1/generate", json={"model": "mock-1", "messages": HELLO})
            assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
        notes = [e["msg"] for e in log_lines(server) if "takes effect only after a restart" in e["msg"]]
        assert any("server.workers (1 -> 3)" in n for n in notes), notes
        assert any("database.path" in n for n in notes), notes
        assert not (server.dir / "elsewhere.db").exists()  # still on the database it started with
    finally:
        config["server"]["workers"] = 1
        config["database"]["path"] = str(server.dir / "data" / "ensemble.db")
        server.config_path.write_text(yaml.safe_dump(config))
        write_provider(server, mock(3.0))
        write_provider(server, upstream(fake, 5.0))
        reload_and_wait(server)


def test_a_broken_config_is_refused_with_every_problem_logged(server: Ensemble) -> None:
    good = (server.dir / "providers" / "mock.yaml").read_text()
    broken = mock(9.0)
    broken["models"][0]["pricing"]["input"] = "cheap"
    broken["strategy"] = "random"
    write_provider(server, broken)
    try:
        out = server.cli("reload", check=False)  # the CLI checks first and signals nothing
        assert out.returncode == 1 and "models[0].pricing.input" in out.stderr
        before = len(log_lines(server))
        os.kill(
            int((server.dir / "data" / "ensemble.pid").read_text()), signal.SIGHUP
        )  # the server checks too
        server.process.wait_until(  # the refusal and its two problems
            lambda: len([e for e in log_lines(server)[before:] if e["level"] == "error"]) >= 3
        )
        text = "\n".join(e["msg"] for e in log_lines(server)[before:])
        assert "config reload refused: 2 problem(s)" in text, text
        assert (
            "providers/mock.yaml: strategy: must be one of: session_affinity, round_robin, least_used (got 'random')"
            in text
        )
        assert (
            "providers/mock.yaml: models[0].pricing.input: expected `float`, got `str` (got 'cheap')" in text
        )
        with server.client() as http:  # still serving the config that ran
            r = http.post("/api/v1/generate", json={"model": "mock-1", "messages": HELLO})
        assert r.status_code == 200 and Decimal(r.json()["cost"]) == cost(
            r.json()["input_tokens"], r.json()["output_tokens"], 3.0, 2.0
        )
    finally:
        (server.dir / "providers" / "mock.yaml").write_text(good)


def test_every_worker_reloads(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> None:
    gateway = Ensemble(Path(tmp_path_factory.mktemp("reload2")), [mock(1.0)], workers=2)
    try:
        write_provider(gateway, {**mock(4.0), "models": [*mock(4.0)["models"], {"name": "mock-2"}]})
        reload_and_wait(gateway, workers=2)
        pids = {e["msg"].split(":")[0] for e in reloads(gateway)}
        assert len(pids) == 2, pids  # "worker <pid>" from each
        seen: set[str] = set()
        for _ in range(200):  # fresh connections until both workers answered
            r = httpx.post(
                gateway.url + "/api/v1/generate",
                json={"model": "mock-2", "messages": HELLO},
                headers={"authorization": f"Bearer {gateway.key}"},
            )
            assert r.status_code == 200, r.text
            assert Decimal(r.json()["cost"]) == 0  # mock-2 is listed without a price
            seen.add(r.headers["x-request-id"][:12])
            if len(seen) == 2:
                break
        assert len(seen) == 2, seen
    finally:
        gateway.stop()
    assert not (gateway.dir / "data" / "ensemble.pid").exists()  # removed on exit
