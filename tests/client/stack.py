"""What the client tests share: the running stack, its upstream lanes and the injected clocks."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from support.client_lanes import GUARDED_LANES, PLAIN_LANES, Lane, guarded_lane, plain_lane
from support.ensemble import Ensemble
from support.fake import FakeUpstream


@dataclass
class Stack:
    gateway: Ensemble
    fake: FakeUpstream
    _plain: Iterator[int] = field(default_factory=itertools.count)
    _guarded: Iterator[int] = field(default_factory=itertools.count)

    def take(self, guarded: bool = False) -> Upstream:
        """An upstream lane no other test has used: no inherited failure count or cool-down."""
        i = next(self._guarded if guarded else self._plain)
        limit = GUARDED_LANES if guarded else PLAIN_LANES
        if i >= limit:
            raise RuntimeError(
                f"all {limit} client lanes are used; raise the count in support/client_lanes.py"
            )
        return Upstream(self, guarded_lane(i) if guarded else plain_lane(i))


@dataclass
class Upstream:
    """One test's own fake endpoint (and the provider + model routed to it only)."""

    stack: Stack
    lane: Lane

    @property
    def gateway(self) -> Ensemble:
        return self.stack.gateway

    @property
    def model(self) -> str:
        return self.lane.model

    @property
    def provider(self) -> str:
        return self.lane.provider

    def enqueue(self, *behaviors: dict[str, Any]) -> None:
        self.stack.fake.enqueue(self.lane.endpoint, *behaviors)

    def upstream_calls(self) -> int:
        return len(self.stack.fake.requests(self.lane.endpoint))


class FakeClock:
    """The injected clock and sleep: sleeping advances the clock and is recorded, never waited.

    `nudge` makes each sleep take that much real time: the gateway's Retry-After is the cool-down
    left in whole seconds rounded up, counting one millisecond more, so a retry in the same
    millisecond as the answer that started a 1 s cool-down would be told 2 s. Ten real
    milliseconds make the expected Retry-After exact."""

    def __init__(self, nudge: float = 0.0) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self.nudge = nudge

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        if self.nudge:
            time.sleep(self.nudge)

    async def asleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        if self.nudge:
            await asyncio.sleep(self.nudge)


class RecordedClock(FakeClock):
    """Sleeps really (and records them): for the few tests where the gateway's own cool-down, which
    runs on real time, must pass before the client's retry. Keep such waits to a second or two."""

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        time.sleep(seconds)

    async def asleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(seconds)
