"""AsyncEnsembleClient against a real `ensemble serve`: the same contract as the sync client."""

from __future__ import annotations

import asyncio

import pytest

from client.stack import FAKE_ENDPOINT, FAKE_MODEL, FakeClock, Stack
from ensemble.client import (
    NO_RETRIES,
    APIConnectionError,
    AsyncEnsembleClient,
    BadRequestError,
    CircuitOpenError,
    ConfigurationError,
    MissingAPIKeyWarning,
    NotFoundError,
    ProviderError,
    RateLimitError,
    StreamError,
    TextBlock,
    ToolCallBlock,
)
from support.processes import free_port

HELLO = "Hello there, gateway"
MOCK_ANSWER = "This is a mock answer from Ensemble. You said: Hello there, gateway"
WEATHER = {
    "name": "get_weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def make_client(stack: Stack, clock: FakeClock, **kw: object) -> AsyncEnsembleClient:
    return AsyncEnsembleClient(
        stack.gateway.url,
        stack.gateway.key,
        clock=clock,
        sleep=clock.asleep,
        env={},
        **kw,  # type: ignore[arg-type]
    )


async def test_every_method(stack: Stack, fake_clock: FakeClock) -> None:
    async with make_client(stack, fake_clock) as client:
        made = await client.generate("mock-1", HELLO)
        assert made.content == MOCK_ANSWER and made.cost_micro_dollars > 0
        assert (await client.get_status(made.id)).status == "completed"
        assert await client.retrieve(made.id) == made
        assert {m.id for m in await client.models()} == {"mock-1", FAKE_MODEL}
        assert await client.is_healthy()
        chunks = [c async for c in client.generate_stream("mock-1", HELLO)]
        assert all(chunks) and "".join(chunks) == MOCK_ANSWER


async def test_stream_blocks_and_done(stack: Stack, fake_clock: FakeClock) -> None:
    async with make_client(stack, fake_clock) as client:
        async with client.stream("mock-1", HELLO) as s:
            blocks = [b async for b in s]
        assert "".join(b.text for b in blocks if isinstance(b, TextBlock)) == MOCK_ANSWER
        assert s.response is not None and s.response.id == s.request_id
        tool = client.stream("mock-1", HELLO, tools=[WEATHER])
        calls = [b async for b in tool]
        assert isinstance(calls[0], ToolCallBlock) and calls[0].tool_call.name == "get_weather"
        assert tool.response is not None and tool.response.tool_calls[0].arguments == {"city": "test"}


async def test_concurrent_calls_share_one_client(stack: Stack, fake_clock: FakeClock) -> None:
    async with make_client(stack, fake_clock) as client:
        answers = await asyncio.gather(*(client.generate("mock-1", f"question {i}") for i in range(8)))
    assert [a.content.rsplit(": ", 1)[1] for a in answers] == [f"question {i}" for i in range(8)]
    assert len({a.id for a in answers}) == 8


async def test_typed_errors(stack: Stack, fake_clock: FakeClock) -> None:
    async with make_client(stack, fake_clock) as client:
        with pytest.raises(NotFoundError) as nf:
            await client.get_status("req_nope")
        assert nf.value.status == 404 and not nf.value.retryable and nf.value.request_id
        with pytest.raises(BadRequestError) as bad:
            await client.generate("mock-1", HELLO, top_p=3)
        assert bad.value.status == 400 and "top_p" in bad.value.message
    assert fake_clock.sleeps == []


async def test_retries_with_backoff_and_retry_after(upstream: Stack, fake_clock: FakeClock) -> None:
    upstream.fake.enqueue(FAKE_ENDPOINT, {"status": 502}, {"status": 529, "retry_after": 2.5})
    async with make_client(upstream, fake_clock) as client:
        r = await client.generate(FAKE_MODEL, HELLO)
    # 502 → back-off 1 s; 529 → gateway 429 with Retry-After 3 (whole seconds) → 3 s
    assert r.provider == "fake" and fake_clock.sleeps == [1.0, 3.0] and upstream.upstream_calls() == 3


async def test_exhausted_retries_raise_the_typed_error(upstream: Stack, fake_clock: FakeClock) -> None:
    upstream.fake.enqueue(FAKE_ENDPOINT, {"status": 529, "count": 3})
    async with make_client(upstream, fake_clock) as client:
        with pytest.raises(RateLimitError) as info:
            await client.generate(FAKE_MODEL, HELLO)
    assert info.value.status == 429 and info.value.retryable and info.value.retry_after == 1
    assert fake_clock.sleeps == [1.0, 1.0] and upstream.upstream_calls() == 3


async def test_mid_stream_error(upstream: Stack, fake_clock: FakeClock) -> None:
    upstream.fake.enqueue(FAKE_ENDPOINT, {"error_event_after_chunks": 2})
    async with make_client(upstream, fake_clock) as client:
        with pytest.raises(StreamError) as info:
            async for _ in client.stream(FAKE_MODEL, HELLO):
                pass
    assert info.value.type and upstream.upstream_calls() == 1 and fake_clock.sleeps == []


async def test_breaker(upstream: Stack, fake_clock: FakeClock) -> None:
    upstream.fake.enqueue(FAKE_ENDPOINT, {"status": 500, "count": 5})
    async with make_client(upstream, fake_clock, retry=NO_RETRIES) as client:
        for _ in range(5):
            with pytest.raises(ProviderError):
                await client.generate(FAKE_MODEL, HELLO)
        with pytest.raises(CircuitOpenError):
            await client.generate(FAKE_MODEL, HELLO)
        with pytest.raises(CircuitOpenError):
            async for _ in client.stream(FAKE_MODEL, HELLO):
                pass
        assert upstream.upstream_calls() == 5
        fake_clock.now += 30
        assert (await client.generate(FAKE_MODEL, HELLO)).provider == "fake"  # the probe
        assert client.breaker.state == "closed"


async def test_connection_error_and_missing_key(stack: Stack, fake_clock: FakeClock) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    async with AsyncEnsembleClient(url, "ens_x", clock=fake_clock, sleep=fake_clock.asleep, env={}) as down:
        with pytest.raises(APIConnectionError) as info:
            await down.models()
        assert info.value.retryable and fake_clock.sleeps == [1.0, 2.0]
        assert await down.is_healthy() is False
    with pytest.warns(MissingAPIKeyWarning):
        client = AsyncEnsembleClient(env={"ENSEMBLE_URL": stack.gateway.url})
    async with client:
        with pytest.raises(ConfigurationError):
            await client.generate("mock-1", HELLO)
