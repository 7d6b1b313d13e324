"""server/busy_poll.py: the loop keeps turning while a request is in flight and one arrived within the
window, and stops by itself; and stream sinks share one flush callback per loop turn.

The sleeps here are the behaviour under test: time passing inside and beyond the spin window."""

from __future__ import annotations

import asyncio
from typing import Any

from ensemble.server.busy_poll import BusyPoll
from ensemble.server.http import StreamSink


async def turns_during(seconds: float) -> int:
    """How many times the loop ran a ready callback chain of ours in `seconds` (a sleeping loop: ~1)."""
    count = 0
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds

    def tick() -> None:
        nonlocal count
        count += 1
        if loop.time() < end:
            loop.call_soon(tick)

    loop.call_soon(tick)
    await asyncio.sleep(seconds + 0.01)
    return count


async def test_spins_while_a_request_is_in_flight_then_stops_at_the_window() -> None:
    busy = BusyPoll(0.3)
    busy.enter()
    assert busy._spinning
    await asyncio.sleep(0.02)
    assert busy._spinning  # in flight, within the window
    await asyncio.sleep(0.4)
    assert not busy._spinning  # still in flight, but nothing arrived for longer than the window
    busy.exit()
    assert busy.active == 0


async def test_a_new_arrival_extends_the_window_and_the_last_exit_stops_it() -> None:
    busy = BusyPoll(0.3)
    busy.enter()
    await asyncio.sleep(0.2)
    busy.enter()  # a second request: spinning goes on past the first window
    await asyncio.sleep(0.15)
    assert busy._spinning
    busy.exit()
    busy.exit()
    await asyncio.sleep(0.01)
    assert not busy._spinning  # nothing in flight: stops at the next turn


async def test_zero_window_never_spins() -> None:
    busy = BusyPoll(0.0)
    busy.enter()
    assert not busy._spinning
    busy.exit()


async def test_spinning_does_not_starve_other_callbacks() -> None:
    busy = BusyPoll(0.2)
    busy.enter()
    try:
        assert await turns_during(0.02) > 1  # the loop still runs everything else in between
        await asyncio.wait_for(asyncio.sleep(0.01), 1.0)  # timers fire too
    finally:
        busy.exit()


class FakeProto:
    def __init__(self, log: list[tuple[str, Any]]) -> None:
        self.log = log

    def response_stream(self, status: int, headers: list[tuple[str, str]]) -> FakeTransport:
        self.log.append(("start", status))
        return FakeTransport(self.log)


class FakeTransport:
    def __init__(self, log: list[tuple[str, Any]]) -> None:
        self.log = log

    def send_bytes(self, data: bytes) -> None:
        self.log.append(("send", data))


async def test_sinks_written_in_one_turn_leave_together_one_write_each() -> None:
    log_a: list[tuple[str, Any]] = []
    log_b: list[tuple[str, Any]] = []
    a = StreamSink(FakeProto(log_a), 200, [])  # type: ignore[arg-type]
    b = StreamSink(FakeProto(log_b), 200, [])  # type: ignore[arg-type]
    a.write(b"a1")
    b.write(b"b1")
    a.write(b"a2")
    assert log_a == [] and log_b == []  # queued until the end of the turn
    await asyncio.sleep(0)
    assert log_a == [("start", 200), ("send", b"a1a2")]
    assert log_b == [("start", 200), ("send", b"b1")]
    a.release()
    b.write(b"b2")
    await asyncio.sleep(0)
    assert log_b[-1] == ("send", b"b2")
    assert log_a == [("start", 200), ("send", b"a1a2")]  # a released sink sends nothing more


async def test_no_spinning_with_many_requests_in_flight() -> None:
    from ensemble.server.busy_poll import MAX_IN_FLIGHT

    busy = BusyPoll(0.3)
    for _ in range(MAX_IN_FLIGHT + 1):
        busy.enter()
    await asyncio.sleep(0.01)
    assert not busy._spinning  # a busy loop rarely sleeps: yielding each turn would only cost
    for _ in range(MAX_IN_FLIGHT + 1):
        busy.exit()
