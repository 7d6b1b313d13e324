"""`GET /api/v1/ws` with the `websockets` client library: auth, many concurrent requests on one
socket, per-request errors, cancel (upstream closed at once), and the socket closing mid-answer."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from support.ensemble import Ensemble
from support.fake import FakeUpstream
from support.waiting import wait_until

from .conftest import HELLO, fake_record, log_row, make_server, solo_providers

pytestmark = pytest.mark.integration

NAMES = ["many", "cancel", "mid", "gone", "garbage"]


@pytest.fixture(scope="module")
def server(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ensemble]:
    s = make_server(
        Path(tmp_path_factory.mktemp("ws")),
        solo_providers(fake, [f"w-{n}" for n in NAMES]),
        on_client_disconnect="cancel",
    )
    yield s
    s.stop()


def ws_url(server: Ensemble) -> str:
    return server.url.replace("http://", "ws://") + "/api/v1/ws"


async def connect(server: Ensemble) -> ClientConnection:
    ws = await websockets.connect(ws_url(server))
    await ws.send(orjson.dumps({"type": "auth", "api_key": server.key}).decode())
    assert orjson.loads(await ws.recv()) == {"type": "ready"}
    return ws


async def collect(ws: ClientConnection, ids: set[str]) -> dict[str, list[dict[str, Any]]]:
    """Messages per request id until each of `ids` got its done or error."""
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    open_ids = set(ids)
    while open_ids:
        msg = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
        out[msg["request_id"]].append(msg)
        if msg["type"] in ("done", "error"):
            open_ids.discard(msg["request_id"])
    return out


async def test_auth_is_required(server: Ensemble) -> None:
    async with websockets.connect(ws_url(server)) as ws:
        await ws.send('{"type": "auth", "api_key": "ens_not-a-real-key-000000000000000000"}')
        msg = orjson.loads(await ws.recv())
        assert msg["type"] == "error" and msg["error"]["code"] == "invalid_api_key"
        with pytest.raises(websockets.ConnectionClosed):  # (granian 2.8 sends no close code here)
            await ws.recv()
    async with websockets.connect(ws_url(server)) as ws:
        await ws.send('{"type": "request", "request_id": "x"}')
        msg = orjson.loads(await ws.recv())
        assert msg["error"]["code"] == "auth_required"


async def test_many_concurrent_requests_on_one_socket(server: Ensemble, fake: FakeUpstream) -> None:
    fake.configure("solo-w-many", chunk_gap_ms=30, chunks=10)
    ws = await connect(server)
    ids = {f"ws-many-{i}" for i in range(20)}
    t0 = time.monotonic()
    for rid in sorted(ids):
        await ws.send(
            orjson.dumps({"type": "request", "request_id": rid, "model": "s-w-many", "messages": HELLO})
        )
    # A bad request gets its own error and does not disturb the others.
    await ws.send(
        orjson.dumps({"type": "request", "request_id": "ws-bad", "model": "s-w-many", "messages": []})
    )
    got = await collect(ws, ids | {"ws-bad"})
    elapsed = time.monotonic() - t0
    await ws.close()
    assert got["ws-bad"][-1]["type"] == "error" and got["ws-bad"][-1]["error"]["code"] == "invalid_request"
    for rid in ids:
        msgs = got[rid]
        assert msgs[-1]["type"] == "done", msgs[-1]
        text = "".join(m["block"].get("text", "") for m in msgs if m["type"] == "block")
        assert text == msgs[-1]["response"]["content"] and len(msgs) > 3
        assert msgs[-1]["response"]["id"] == rid
    # 20 answers of ~300 ms each, concurrently: far less than 20 x 300 ms.
    assert elapsed < 3.0
    assert log_row(server, "ws-many-7")["status"] == "success"


async def test_garbage_after_auth_gets_an_error_and_the_socket_goes_on(
    server: Ensemble, fake: FakeUpstream
) -> None:
    """Not JSON, not an object, invalid UTF-8 bytes: each gets an `error` message (no request id),
    the request already running on the socket finishes, and the next one is served."""
    fake.configure("solo-w-garbage", chunk_gap_ms=40, chunks=6)
    ws = await connect(server)
    await ws.send("not json")  # the first message after auth: what used to end the socket (1005)
    await ws.send(
        orjson.dumps({"type": "request", "request_id": "g-1", "model": "s-w-garbage", "messages": HELLO})
    )
    for garbage in ("[1, 2]", b"\xff\xfe{", "{", '"a string"'):
        await ws.send(garbage)
    errors: list[dict[str, Any]] = []
    done = False
    while not done or len(errors) < 5:
        msg = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
        if msg["type"] == "error":
            errors.append(msg)
        done = done or (msg["type"] == "done" and msg["request_id"] == "g-1")
    assert [e["error"]["code"] for e in errors] == ["invalid_json"] * 5
    assert all(e["request_id"] is None for e in errors)
    await ws.send(
        orjson.dumps({"type": "request", "request_id": "g-2", "model": "s-w-garbage", "messages": HELLO})
    )
    got = await collect(ws, {"g-2"})
    assert got["g-2"][-1]["type"] == "done"
    await ws.close()
    output = server.process.output()
    assert "Traceback" not in output and "UnboundLocalError" not in output, output[-3000:]


async def test_cancel_one_request_closes_its_upstream(server: Ensemble, fake: FakeUpstream) -> None:
    fake.configure("solo-w-cancel", chunk_gap_ms=100, chunks=60)
    fake.configure("solo-w-many", chunk_gap_ms=10, chunks=10)
    ws = await connect(server)
    await ws.send(
        orjson.dumps({"type": "request", "request_id": "c1", "model": "s-w-cancel", "messages": HELLO})
    )
    await ws.send(
        orjson.dumps({"type": "request", "request_id": "k1", "model": "s-w-many", "messages": HELLO})
    )
    first = orjson.loads(await ws.recv())
    while first["request_id"] != "c1":
        first = orjson.loads(await ws.recv())
    assert first["type"] == "block"
    sent_at = time.time()
    await ws.send('{"type": "cancel", "request_id": "c1"}')
    got = await collect(ws, {"c1", "k1"})
    await ws.close()
    assert got["c1"][-1]["type"] == "error" and got["c1"][-1]["error"]["code"] == "cancelled"
    assert got["k1"][-1]["type"] == "done"  # the other request on the socket is unaffected
    rec = wait_until(lambda: fake_record(fake, "solo-w-cancel")["disconnected_at"])
    assert rec - sent_at < 0.1
    row = log_row(server, "c1")
    assert row["http_status"] == 499 and row["output_tokens"] > 0


async def test_mid_stream_failure_is_an_error_for_that_request(server: Ensemble, fake: FakeUpstream) -> None:
    fake.enqueue("solo-w-mid", {"reset_after_chunks": 3})
    ws = await connect(server)
    await ws.send(
        orjson.dumps({"type": "request", "request_id": "m1", "model": "s-w-mid", "messages": HELLO})
    )
    got = await collect(ws, {"m1"})
    await ws.close()
    kinds = [m["type"] for m in got["m1"]]
    assert kinds[0] == "block" and set(kinds[:-1]) == {"block"}
    err = got["m1"][-1]
    assert err["type"] == "error" and err["error"]["code"] == "stream_broken" and err["error"]["retryable"]


async def test_socket_close_cancels_running_requests(server: Ensemble, fake: FakeUpstream) -> None:
    fake.enqueue("solo-w-gone", {"stall_after_chunks": 3, "stall_ms": 15000})
    ws = await connect(server)
    await ws.send(
        orjson.dumps({"type": "request", "request_id": "g1", "model": "s-w-gone", "messages": HELLO})
    )
    assert orjson.loads(await ws.recv())["type"] == "block"
    await ws.close()
    closed_at = time.time()
    rec = wait_until(lambda: fake_record(fake, "solo-w-gone")["disconnected_at"])
    assert rec - closed_at < 0.1
    assert log_row(server, "g1")["http_status"] == 499
