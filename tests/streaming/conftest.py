"""Helpers for streaming tests: a fake upstream, an Ensemble wired to its virtual endpoints, SSE
parsing, and reading the request log straight from SQLite."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from support.ensemble import Ensemble, openai_provider
from support.fake import FakeUpstream
from support.tls import local_ca, tls_fake  # noqa: F401  (fixtures for the TLS tests)

HELLO = [{"role": "user", "content": "Tell me a story about a gateway"}]


@pytest.fixture(scope="package")
def fake() -> Iterator[FakeUpstream]:
    upstream = FakeUpstream()
    yield upstream
    upstream.stop()


def scenario_providers(fake: FakeUpstream, names: list[str]) -> list[dict[str, Any]]:
    """Per scenario: model `m-<name>` served by provider `p-<name>` (endpoint `ep-<name>`, tried
    first) and a backup provider `b-<name>` (endpoint `bk-<name>`), so cool-downs never leak
    between tests and failover order is deterministic."""
    out = []
    for name in names:
        model = [f"m-{name}"]
        out.append(
            openai_provider(
                fake.endpoint_url(f"ep-{name}"),
                name=f"p-{name}",
                models=model,
                endpoints=[{"id": f"ep-{name}", "api_key": "sk-test-upstream-key-000000"}],
                priority=1,
            )
        )
        out.append(
            openai_provider(
                fake.endpoint_url(f"bk-{name}"),
                name=f"b-{name}",
                models=model,
                endpoints=[{"id": f"bk-{name}", "api_key": "sk-test-upstream-key-000000"}],
                priority=2,
            )
        )
    return out


def solo_providers(fake: FakeUpstream, names: list[str]) -> list[dict[str, Any]]:
    """Model `s-<name>` on one endpoint `solo-<name>`: failures reach the client."""
    return [
        openai_provider(
            fake.endpoint_url(f"solo-{name}"),
            name=f"solo-{name}",
            models=[f"s-{name}"],
            endpoints=[{"id": f"solo-{name}", "api_key": "sk-test-upstream-key-000000"}],
        )
        for name in names
    ]


def sse_events(text: str) -> list[tuple[str, Any]]:
    events = []
    for frame in text.replace("\r\n", "\n").split("\n\n"):
        if not frame.strip():
            continue
        fields: dict[str, str] = {}
        for line in frame.split("\n"):
            name, _, value = line.partition(": ")
            fields[name] = value
        events.append((fields.get("event", "message"), orjson.loads(fields["data"])))
    return events


def log_row(server: Ensemble, request_id: str, timeout: float = 5.0) -> dict[str, Any]:
    """The request_log row of one request, read from the server's SQLite file (waits for the
    batched writer)."""
    db = server.dir / "data" / "ensemble.db"
    deadline = time.monotonic() + timeout
    while True:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        conn.row_factory = sqlite3.Row
        try:
            rows = conn.execute("SELECT * FROM request_log WHERE request_id = ?", (request_id,)).fetchall()
        finally:
            conn.close()
        if rows:
            assert len(rows) == 1, f"request {request_id} recorded {len(rows)} times"
            return dict(rows[0])
        if time.monotonic() > deadline:
            raise AssertionError(f"no request_log row for {request_id} within {timeout}s")
        time.sleep(0.05)


def fake_record(fake: FakeUpstream, endpoint: str, index: int = -1) -> dict[str, Any]:
    records = fake.requests(endpoint)
    assert records, f"the fake endpoint {endpoint} received no request"
    return records[index]


def make_server(tmp: Path, providers: list[dict[str, Any]], **server: Any) -> Ensemble:
    return Ensemble(
        tmp,
        providers=providers,
        config={
            "server": server,
            "streaming_timeouts": {
                "default": {"stall_timeout": "500ms", "overall_timeout": "20s"},
                "s-overall*": {"stall_timeout": "500ms", "overall_timeout": "1s"},
            },
        },
    )
