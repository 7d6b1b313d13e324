"""AsyncEnsembleClient against a real `ensemble serve`: the same contract as the sync client."""

from __future__ import annotations

import asyncio

import pytest

from client.stack import FakeClock, RecordedClock, Stack, Upstream
from ensemble.client import (
    NO_RETRIES,
    APIConnectionError,
    AsyncEnsembleClient,
    BadRequestError,
    CircuitBreaker,
    CircuitOpenError,
    ConfigurationError,
    MissingAPIKeyWarning,
    NotFoundError,
    OverloadedError,
    ProviderError,
    RateLimitError,
    StreamError,
    TextBlock,
    ToolCallBlock,
)
from support.client_lanes import lane_models
from support.processes import free_port

pytestmark = pytest.mark.integration

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
        assert {m.id for m in await client.models()} == {"mock-1", *lane_models()}
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


async def test_retries_with_backoff_and_retry_after(upstream: Upstream) -> None:
    # The 529 cools the endpoint for its 1 s retry-after on the gateway's real clock, so this test
    # really sleeps (and records the sleeps): the retry must come after the cool-down.
    upstream.enqueue({"status": 502}, {"status": 529, "retry_after": 1})
    clock = RecordedClock()
    async with make_client(upstream, clock) as client:
        r = await client.generate(upstream.model, HELLO)
    # 502 → back-off 1 s; 529 → the gateway's 429 with Retry-After: 1 → 1 s
    assert r.provider == upstream.provider and clock.sleeps == [1.0, 1.0] and upstream.upstream_calls() == 3


async def test_exhausted_retries_raise_the_typed_error(upstream: Upstream) -> None:
    upstream.enqueue({"status": 529, "count": 3, "retry_after": 1})
    clock = RecordedClock()
    async with make_client(upstream, clock) as client:
        with pytest.raises(RateLimitError) as info:
            await client.generate(upstream.model, HELLO)
    assert info.value.status == 429 and info.value.retryable and info.value.retry_after == 1
    assert info.value.code == "all_endpoints_exhausted"
    assert clock.sleeps == [1.0, 1.0] and upstream.upstream_calls() == 3


async def test_a_cooling_endpoint_is_answered_by_the_gateway(
    guarded: Upstream, fake_clock: FakeClock
) -> None:
    # The gateway's own protection end to end: three upstream 500s in a row cool the endpoint
    # (2 s); the client then gets the gateway's 503 with Retry-After, typed and retryable, and
    # the upstream is not called again.
    guarded.enqueue({"status": 500, "count": 3})
    async with make_client(
        guarded, fake_clock, retry=NO_RETRIES, breaker=CircuitBreaker(failure_threshold=10, clock=fake_clock)
    ) as client:
        for _ in range(3):
            with pytest.raises(ProviderError) as failed:
                await client.generate(guarded.model, HELLO)
            assert failed.value.status == 502 and failed.value.retryable
        await asyncio.sleep(0.01)  # not in the millisecond the cool-down started (see FakeClock)
        with pytest.raises(OverloadedError) as info:
            await client.generate(guarded.model, HELLO)
    e = info.value
    assert e.status == 503 and e.type == "overloaded" and e.code == "all_endpoints_failing" and e.retryable
    assert e.retry_after == 2 and guarded.upstream_calls() == 3 and fake_clock.sleeps == []


async def test_mid_stream_error(upstream: Upstream, fake_clock: FakeClock) -> None:
    upstream.enqueue({"error_event_after_chunks": 2})
    async with make_client(upstream, fake_clock) as client:
        with pytest.raises(StreamError) as info:
            async for _ in client.stream(upstream.model, HELLO):
                pass
    assert info.value.type and upstream.upstream_calls() == 1 and fake_clock.sleeps == []


async def test_breaker(upstream: Upstream, fake_clock: FakeClock) -> None:
    upstream.enqueue({"status": 500, "count": 5})
    async with make_client(upstream, fake_clock, retry=NO_RETRIES) as client:
        for _ in range(5):
            with pytest.raises(ProviderError):
                await client.generate(upstream.model, HELLO)
        with pytest.raises(CircuitOpenError):
            await client.generate(upstream.model, HELLO)
        with pytest.raises(CircuitOpenError):
            async for _ in client.stream(upstream.model, HELLO):
                pass
        assert upstream.upstream_calls() == 5
        fake_clock.now += 30
        assert (await client.generate(upstream.model, HELLO)).provider == upstream.provider  # the probe
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
