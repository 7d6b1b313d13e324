"""The upstream HTTP clients against the real fake upstream: bodies, streams, reuse, faults."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import orjson
import pytest

from ensemble.errors import ProviderError, UpstreamTimeout
from ensemble.upstream.client import AiohttpClient, UpstreamClient
from ensemble.upstream.http1 import Http1Client
from ensemble.upstream.http2 import Http2Client
from support.fake import FakeUpstream
from support.processes import free_port

pytestmark = pytest.mark.integration

BODY = orjson.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
STREAM_BODY = orjson.dumps(
    {"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
)
HEADERS = {"Authorization": "Bearer sk-test", "Content-Type": "application/json"}


CLIENTS: dict[str, type[Http1Client] | type[Http2Client] | type[AiohttpClient]] = {
    "http1": Http1Client,
    "http2": Http2Client,  # h2c with prior knowledge: the fake serves both on one port
    "aiohttp": AiohttpClient,
}


@pytest.fixture(params=list(CLIENTS))
async def client(request: pytest.FixtureRequest) -> AsyncIterator[UpstreamClient]:
    c: UpstreamClient = CLIENTS[request.param](connect_timeout=2, read_timeout=5)
    await c.start()
    yield c
    await c.close()


def url(fake: FakeUpstream, endpoint: str) -> str:
    return f"{fake.endpoint_url(endpoint)}/v1/chat/completions"


async def test_json_answers(fake: FakeUpstream, client: UpstreamClient) -> None:
    endpoint = f"json-{type(client).__name__}"
    before = len(fake.requests(endpoint))
    for _ in range(5):
        resp = await client.post(url(fake, endpoint), HEADERS, BODY)
        assert resp.status == 200 and resp.headers["content-type"].startswith("application/json")
        assert orjson.loads(await resp.read())["object"] == "chat.completion"
    assert len(fake.requests(endpoint)) - before == 5


async def test_http1_keeps_one_connection_for_sequential_calls(fake: FakeUpstream) -> None:
    c = Http1Client(connect_timeout=2, read_timeout=5)
    first = None
    for _ in range(5):
        resp = await c.post(url(fake, "reuse"), HEADERS, BODY)
        await resp.read()
        (pool,) = c._pools.values()
        assert len(pool.idle) == 1
        first = first or pool.idle[0]
        assert pool.idle[0] is first  # the same connection every time
    await c.close()


async def test_http1_retries_once_when_an_idle_connection_was_closed(fake: FakeUpstream) -> None:
    c = Http1Client(connect_timeout=2, read_timeout=5)
    await (await c.post(url(fake, "stale"), HEADERS, BODY)).read()
    (pool,) = c._pools.values()
    stale = pool.idle[0]
    assert stale.transport is not None
    stale.transport.close()  # as if the provider's keep-alive expired just as we picked it
    stale.closed = False  # not yet noticed by the pool: the next call takes it first
    resp = await c.post(url(fake, "stale"), HEADERS, BODY)
    assert resp.status == 200 and await resp.read()
    await c.close()


async def test_error_status_is_returned_with_its_body(fake: FakeUpstream, client: UpstreamClient) -> None:
    fake.enqueue("errors", {"status": 429, "retry_after": 2})
    resp = await client.post(url(fake, "errors"), HEADERS, BODY)
    assert resp.status == 429 and resp.headers["retry-after"] == "2"
    assert "error" in orjson.loads(await resp.read())


async def test_stream_arrives_in_pieces(fake: FakeUpstream, client: UpstreamClient) -> None:
    fake.configure("stream", chunks=20, chunk_gap_ms=5)
    resp = await client.post(url(fake, "stream"), HEADERS, STREAM_BODY)
    pieces = [c async for c in resp.chunks()]
    assert len(pieces) > 5 and b"".join(pieces).endswith(b"data: [DONE]\n\n")


async def test_stall_before_first_byte_times_out(fake: FakeUpstream, client: UpstreamClient) -> None:
    fake.enqueue("stall", {"stall_before_first_byte_ms": 3000})
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout) as e:
        resp = await client.post(url(fake, "stall"), HEADERS, STREAM_BODY, read_timeout=0.3)
        try:
            async for _ in resp.chunks():
                pass
        finally:
            resp.close()
    assert e.value.retryable and time.monotonic() - started < 2.5


async def test_stall_mid_stream_times_out(fake: FakeUpstream, client: UpstreamClient) -> None:
    fake.enqueue("midstall", {"stall_after_chunks": 3, "stall_ms": 3000})
    resp = await client.post(url(fake, "midstall"), HEADERS, STREAM_BODY, read_timeout=0.3)
    got = b""
    with pytest.raises(UpstreamTimeout):
        try:
            async for chunk in resp.chunks():
                got += chunk
        finally:
            resp.close()
    assert got.count(b"data: ") >= 1


async def test_reset_mid_stream_is_a_provider_error(fake: FakeUpstream, client: UpstreamClient) -> None:
    fake.enqueue("reset", {"reset_after_chunks": 3})
    resp = await client.post(url(fake, "reset"), HEADERS, STREAM_BODY)
    with pytest.raises(ProviderError):
        try:
            async for _ in resp.chunks():
                pass
        finally:
            resp.close()


async def test_close_aborts_the_connection(fake: FakeUpstream, client: UpstreamClient) -> None:
    fake.configure("abort", chunks=50, chunk_gap_ms=50)
    resp = await client.post(url(fake, "abort"), HEADERS, STREAM_BODY)
    chunks = resp.chunks()
    await chunks.__anext__()
    await chunks.aclose()  # what the provider layer does when a client goes away
    closed_at = time.time()
    resp.close()
    for _ in range(50):
        rec = fake.requests("abort")[-1]
        if rec["client_disconnected"]:
            break
        await asyncio.sleep(0.02)
    assert rec["client_disconnected"] and rec["disconnected_at"] - closed_at < 0.5


async def test_connection_refused_is_retryable(client: UpstreamClient) -> None:
    with pytest.raises(ProviderError) as e:
        await client.post(f"http://127.0.0.1:{free_port()}/v1/chat/completions", HEADERS, BODY)
    assert e.value.retryable and e.value.code == "connect_error"


@pytest.mark.parametrize("kind", [Http1Client, Http2Client])
async def test_header_injection_is_refused(fake: FakeUpstream, kind: type[Http1Client | Http2Client]) -> None:
    c = kind(connect_timeout=1, read_timeout=1)
    await c.start()
    try:
        with pytest.raises(ProviderError):
            await c.post(url(fake, "evil"), {"X-Evil": "a\r\nInjected: 1"}, b"")
        assert not fake.requests("evil")
    finally:
        await c.close()
