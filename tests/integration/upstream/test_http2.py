"""The HTTP/2 pool against a server that shows what the client did on the wire (support.h2server):
connection cap, SETTINGS_MAX_CONCURRENT_STREAMS, flow control, RST_STREAM, GOAWAY."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest

from ensemble.upstream.client import UpstreamResponse
from ensemble.upstream.http2 import Http2Client
from support.h2server import H2TestServer

pytestmark = pytest.mark.integration

HEADERS = {"Content-Type": "application/json"}
BODY = b'{"model": "m", "stream": true}'


@pytest.fixture
async def open_client() -> AsyncIterator[Callable[[int], Http2Client]]:
    made: list[Http2Client] = []

    def make(cap: int = 100) -> Http2Client:
        c = Http2Client(connect_timeout=2, read_timeout=5, max_connections_per_host=cap)
        made.append(c)
        return c

    yield make
    for c in made:
        await c.close()


async def body_of(resp: UpstreamResponse) -> int:
    return sum([len(c) async for c in resp.chunks()])


async def until(condition: Callable[[], object]) -> None:
    """Poll: the condition is the server thread's log, no event this loop could await."""
    async with asyncio.timeout(5):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.005)


async def test_streams_queue_at_the_connection_cap(open_client: Callable[[int], Http2Client]) -> None:
    with H2TestServer(max_concurrent_streams=5, chunks=3, gap=0.05) as server:
        client = open_client(2)
        await client.start()
        responses = await asyncio.gather(*(client.post(server.url, HEADERS, BODY) for _ in range(12)))
        sizes = await asyncio.gather(*(body_of(r) for r in responses))
    assert sizes == [300] * 12
    assert server.log.connections == 2  # the cap, though 12 streams wanted 3 connections
    assert server.log.max_open_per_connection <= 5  # the server's SETTINGS were honoured


async def test_a_full_connection_makes_another(open_client: Callable[[int], Http2Client]) -> None:
    with H2TestServer(max_concurrent_streams=5, chunks=3, gap=0.05) as server:
        client = open_client(100)
        await client.start()
        responses = await asyncio.gather(*(client.post(server.url, HEADERS, BODY) for _ in range(12)))
        assert client.connections == 3
        await asyncio.gather(*(body_of(r) for r in responses))
    assert server.log.connections == 3 and server.log.max_open_per_connection == 5


async def test_flow_control_follows_the_consumer(open_client: Callable[[int], Http2Client]) -> None:
    with H2TestServer(chunks=64, chunk_size=65536) as server:  # 4 MiB, as fast as the window allows
        client = open_client(1)
        await client.start()
        resp = await client.post(server.url, HEADERS, BODY)
        chunks = resp.chunks()
        taken = len(await chunks.__anext__())
        (log,) = server.log.streams
        await until(lambda: log.blocked)  # the server ran out of window: we stopped granting it
        assert log.sent - taken <= 256 * 1024  # never more than one stream window ahead
        async for chunk in chunks:
            taken += len(chunk)
        assert taken == log.sent == 64 * 65536


async def test_close_sends_rst_stream_and_keeps_the_connection(
    open_client: Callable[[int], Http2Client],
) -> None:
    with H2TestServer(chunks=100, gap=0.05) as server:
        client = open_client(100)
        await client.start()
        resp = await client.post(server.url, HEADERS, BODY)
        await resp.chunks().__anext__()
        closed_at = time.time()
        resp.close()
        (log,) = server.log.streams
        await until(lambda: log.reset_at)
        assert log.reset_at is not None and log.reset_at - closed_at < 0.1
        assert log.reset_code == 8  # CANCEL
        server.chunks = 2
        assert await body_of(await client.post(server.url, HEADERS, BODY)) == 200
    assert server.log.connections == 1


async def test_goaway_lets_open_streams_finish_and_sends_new_ones_elsewhere(
    open_client: Callable[[int], Http2Client],
) -> None:
    with H2TestServer(chunks=5, gap=0.05) as server:
        client = open_client(100)
        await client.start()
        first = [await client.post(server.url, HEADERS, BODY) for _ in range(3)]
        server.goaway()  # last_stream_id: the highest seen, so all three go on
        later = await client.post(server.url, HEADERS, BODY)
        sizes = await asyncio.gather(*(body_of(r) for r in [*first, later]))
    assert sizes == [500] * 4
    assert server.log.connections == 2
    assert [s.connection for s in server.log.streams] == [1, 1, 1, 2]


async def test_streams_above_goaway_are_sent_again_on_a_new_connection(
    open_client: Callable[[int], Http2Client],
) -> None:
    with H2TestServer(chunks=2, head_delay=0.3) as server:
        client = open_client(100)
        await client.start()
        kept = asyncio.ensure_future(client.post(server.url, HEADERS, BODY))
        await until(lambda: len(server.log.streams) == 1)
        refused = asyncio.ensure_future(client.post(server.url, HEADERS, BODY))
        await until(lambda: len(server.log.streams) == 2)
        server.goaway(last_stream_id=1)  # stream 3 was never processed
        assert await body_of(await kept) == 200
        assert await body_of(await refused) == 200
    assert [(s.connection, s.stream_id) for s in server.log.streams] == [(1, 1), (1, 3), (2, 1)]


async def test_a_server_that_is_not_http2_is_a_connect_error(
    open_client: Callable[[int], Http2Client],
) -> None:
    """h2c with prior knowledge to an HTTP/1.1-only server: the gateway fails over, nothing hangs."""
    from ensemble.errors import ProviderError

    async def http1_only(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(http1_only, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = open_client(100)
    await client.start()
    try:
        with pytest.raises(ProviderError) as e:
            await client.post(f"http://127.0.0.1:{port}/v1/x", HEADERS, BODY)
        assert e.value.code == "connect_error" and e.value.retryable
    finally:
        server.close()
        await server.wait_closed()
