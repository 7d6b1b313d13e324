"""Stall watchdog decisions on an injected clock, the coalescer, and the coalescing relay."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from ensemble.errors import ProviderError, UpstreamTimeout
from ensemble.streaming.coalesce import Coalescer
from ensemble.streaming.watchdog import StallWatchdog
from ensemble.types import (
    Finish,
    StreamDelta,
    TextDelta,
    ThinkingDelta,
    ToolCallArgs,
    ToolCallStart,
    UsageDelta,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_stall_fires_only_after_stall_timeout_without_bytes() -> None:
    clock = FakeClock()
    wd = StallWatchdog(stall_timeout=5.0, overall_timeout=60.0, clock=clock)
    assert wd.deadline() == 1005.0
    clock.now += 4.9
    assert wd.poll() == 1005.0  # not yet: re-arm for the same deadline
    wd.end_read()  # bytes arrived at 1004.9
    assert wd.deadline() == pytest.approx(1009.9)
    clock.now += 4.99
    assert wd.check() is None
    clock.now += 0.02
    err = wd.check()
    assert isinstance(err, UpstreamTimeout) and err.code == "stream_stalled" and err.retryable
    assert err.status == 504


def test_overall_timeout_fires_even_while_bytes_flow() -> None:
    clock = FakeClock()
    wd = StallWatchdog(stall_timeout=5.0, overall_timeout=10.0, clock=clock)
    for _ in range(9):
        clock.now += 1.0
        wd.end_read()
        assert wd.check() is None
    assert wd.deadline() == 1010.0  # the overall deadline is now the nearer one
    clock.now += 1.0
    err = wd.check()
    assert err is not None and err.code == "stream_timeout"


def test_expiry_is_sticky_and_raised_at_the_next_read() -> None:
    clock = FakeClock()
    wd = StallWatchdog(stall_timeout=1.0, overall_timeout=60.0, clock=clock)
    clock.now += 2.0
    assert wd.poll() is None  # expired; nothing was reading, so nothing to interrupt
    clock.now -= 1.5  # even if the clock went back, the decision stands
    with pytest.raises(UpstreamTimeout):
        wd.begin_read()


async def test_time_the_consumer_was_busy_is_not_a_stall() -> None:
    clock = FakeClock()
    wd = StallWatchdog(stall_timeout=1.0, overall_timeout=60.0, clock=clock)
    wd.begin_read()
    clock.now += 0.5
    wd.end_read()
    clock.now += 0.9  # the client side held us up; the upstream was not asked for bytes
    wd.begin_read()  # a read starts fresh
    clock.now += 0.9
    assert wd.check() is None


async def test_poll_interrupts_a_pending_read_with_a_timeout() -> None:
    clock = FakeClock()
    wd = StallWatchdog(stall_timeout=1.0, overall_timeout=60.0, clock=clock)
    never: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def read() -> bytes:
        wd.begin_read()
        try:
            return await never
        except asyncio.CancelledError:
            timeout = wd.take_cancel()
            if timeout is None:
                raise
            raise timeout from None
        finally:
            wd.end_read()

    task = asyncio.ensure_future(read())
    await asyncio.sleep(0)
    clock.now += 1.5
    assert wd.poll() is None
    with pytest.raises(UpstreamTimeout):
        await task
    assert not task.cancelled()


async def test_real_timer_rearms_and_fires() -> None:
    # Real time, on purpose: activity every 50 ms keeps the 500 ms stall timer from firing. (The
    # margin is wide because a loaded machine can hold the loop back for a few hundred ms.)
    wd = StallWatchdog(stall_timeout=0.5, overall_timeout=10)
    wd.arm()
    try:
        for _ in range(4):
            wd.begin_read()
            await asyncio.sleep(0.05)
            wd.end_read()
        assert wd.check() is None
        wd.begin_read()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.sleep(1)
        err = wd.take_cancel()
        assert err is not None and err.code == "stream_stalled"
    finally:
        wd.disarm()


def test_coalescer_merges_adjacent_text_and_flushes_on_other_kinds() -> None:
    co = Coalescer()
    assert co.push(TextDelta(0, "Hel")) == []
    assert co.push(TextDelta(0, "lo")) == []
    assert co.pending
    out = co.push(ToolCallStart(1, "call_1", "lookup"))
    assert out == [TextDelta(0, "Hello"), ToolCallStart(1, "call_1", "lookup")]
    assert co.push(ToolCallArgs(1, '{"q"')) == []
    assert co.push(ToolCallArgs(1, ": 1}")) == []
    assert co.push(UsageDelta(output_tokens=3)) == [ToolCallArgs(1, '{"q": 1}'), UsageDelta(output_tokens=3)]
    assert co.push(ThinkingDelta(2, "hm")) == []
    assert co.push(ThinkingDelta(2, "", signature="sig")) == [ThinkingDelta(2, "hm")]
    assert co.push(TextDelta(3, "x")) == [ThinkingDelta(2, "", signature="sig")]
    assert co.push(Finish("stop")) == [TextDelta(3, "x"), Finish("stop")]
    assert co.flush() == []


class FakeStream:
    """The part of LiveStream the relay uses: `next()` from a scripted async source."""

    def __init__(self, source: AsyncIterator[StreamDelta | Exception]) -> None:
        self.source = source
        self.closed = False

    async def next(self) -> StreamDelta | None:
        try:
            item = await self.source.__anext__()
        except StopAsyncIteration:
            return None
        if isinstance(item, Exception):
            raise item
        return item


async def scripted(
    items: list[tuple[float, StreamDelta | Exception]],
) -> AsyncIterator[StreamDelta | Exception]:
    for delay, item in items:
        await asyncio.sleep(delay)
        yield item


async def relay_frames(
    items: list[tuple[float, StreamDelta | Exception]], window: float
) -> list[StreamDelta]:
    from ensemble.streaming.relay import CoalescedRelay

    sent: list[StreamDelta] = []

    def send(delta: StreamDelta) -> None:
        sent.append(delta)

    relay = CoalescedRelay(FakeStream(scripted(items)), window)  # type: ignore[arg-type]
    try:
        await relay.run(send)
    finally:
        relay.cancel()
    return sent


async def test_relay_batches_within_the_window() -> None:
    burst = [(0.0, TextDelta(0, c)) for c in "abcd"]
    later = [(0.2, TextDelta(0, "e")), (0.0, Finish("stop"))]
    sent = await relay_frames([*burst, *later], window=0.05)
    assert sent == [TextDelta(0, "abcd"), TextDelta(0, "e"), Finish("stop")]


async def test_relay_flushes_before_raising_the_stream_error() -> None:
    items: list[tuple[float, StreamDelta | Exception]] = [
        (0.0, TextDelta(0, "a")),
        (0.0, TextDelta(0, "b")),
        (0.0, ProviderError("broke", code="stream_broken")),
    ]
    from ensemble.streaming.relay import CoalescedRelay

    sent: list[StreamDelta] = []

    def send(delta: StreamDelta) -> None:
        sent.append(delta)

    relay = CoalescedRelay(FakeStream(scripted(items)), 0.05)  # type: ignore[arg-type]
    with pytest.raises(ProviderError):
        await relay.run(send)
    assert sent == [TextDelta(0, "ab")]


async def test_live_stream_hands_out_each_delta_once_whether_read_one_by_one_or_in_batches() -> None:
    """The pump reads batches, a background completer reads one by one: switching between them
    mid-answer must neither lose nor repeat a delta, and the assembler sees each exactly once."""
    from types import SimpleNamespace

    from ensemble.gateway import LiveStream

    def text(t: str) -> TextDelta:
        return TextDelta(index=0, text=t)

    async def upstream() -> AsyncIterator[list[StreamDelta]]:
        for batch in (["a", "b"], ["c"], ["d", "e"]):
            yield [text(t) for t in batch]

    endpoint = SimpleNamespace(in_flight=1)
    ctx = SimpleNamespace(target=SimpleNamespace(endpoint=endpoint), upstream_s=0.0)
    stream = LiveStream(None, None, ctx, upstream().__aiter__(), [text("x")], 0.0)  # type: ignore[arg-type]
    seen: list[str] = []

    def take(d: StreamDelta | None) -> None:
        assert isinstance(d, TextDelta)
        seen.append(d.text)

    take(await stream.next())
    batch = await stream.next_batch()
    assert batch is not None and [d.text for d in batch if isinstance(d, TextDelta)] == ["a", "b"]
    seen += ["a", "b"]
    take(await stream.next())
    take(await stream.next())
    rest = await stream.next_batch()
    assert rest is not None and len(rest) == 1
    take(rest[0])
    assert await stream.next_batch() is None and await stream.next() is None
    assert seen == ["x", "a", "b", "c", "d", "e"]
    assert stream.assembler.result().blocks[0].text == "xabcde"  # type: ignore[union-attr]
    assert stream.done and endpoint.in_flight == 0


def test_assembler_joins_long_answers_into_runs_without_changing_them() -> None:
    """Thousands of tokens: the text, thinking and tool arguments come out exactly as streamed, and
    the assembler holds a few joined runs instead of one string object per token."""
    from ensemble.assembly import Assembler
    from ensemble.types import TextBlock, ThinkingBlock, ToolCallBlock

    words = [f"w{i} " for i in range(3000)]
    args = ['{"q": "', *(f"{i}," for i in range(500)), '"}']
    assembler = Assembler()
    assembler.feed(ToolCallStart(2, "call_1", "search"))
    for i, word in enumerate(words):
        assembler.feed(ThinkingDelta(0, word[::-1]))
        assembler.feed(TextDelta(1, word))
        if i < len(args):
            assembler.feed(ToolCallArgs(2, args[i]))
    assembler.feed(Finish("stop"))
    thinking, text, tool = assembler.blocks()
    assert isinstance(thinking, ThinkingBlock) and thinking.thinking == "".join(w[::-1] for w in words)
    assert isinstance(text, TextBlock) and text.text == "".join(words)
    assert isinstance(tool, ToolCallBlock) and tool.tool_call.raw_arguments == "".join(args)
    assert tool.tool_call.arguments == {"q": "".join(args[1:-1])}
    assert all(len(b.parts) < 3000 // 64 + 64 for b in assembler._blocks.values())
