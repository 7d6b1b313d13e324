"""What the client tests share: the running stack and the injected clock."""

from __future__ import annotations

from dataclasses import dataclass

from support.ensemble import Ensemble
from support.fake import FakeUpstream

FAKE_ENDPOINT = "client-ep"
FAKE_MODEL = "fake-gpt"


@dataclass
class Stack:
    gateway: Ensemble
    fake: FakeUpstream

    def upstream_calls(self) -> int:
        return len(self.fake.requests(FAKE_ENDPOINT))


class FakeClock:
    """The injected clock and sleep: sleeping advances the clock and is recorded, never waited."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    async def asleep(self, seconds: float) -> None:
        self.sleep(seconds)
