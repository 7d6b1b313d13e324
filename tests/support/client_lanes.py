"""Fresh upstream lanes for the client test suites (Python, TypeScript, Go).

The gateway keeps per-endpoint state (see docs/routing.md): consecutive failures, and a cool-down after a
429/529 or after `cooldown_after_failures` failures in a row. A client test that makes its upstream
fail must therefore not share an endpoint with another test, or it inherits that test's failure
count or cool-down. Each lane is its own OpenAI-format provider on the fake upstream with one
endpoint and one model, handed out once per test:

    plain lane i    provider `fake-i`,  endpoint `client-ep-i`,  model `fake-gpt-i`,
                    `cooldown_after_failures: 0` (the client's own retries and breaker are under test)
    guarded lane i  provider `fake-gi`, endpoint `client-ep-gi`, model `fake-gpt-gi`,
                    the gateway's default failure cool-down (its own protection is under test)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from support.ensemble import openai_provider
from support.fake import FakeUpstream

PLAIN_LANES = 40
GUARDED_LANES = 6


@dataclass(frozen=True)
class Lane:
    provider: str
    endpoint: str
    model: str


def plain_lane(i: int) -> Lane:
    return Lane(f"fake-{i}", f"client-ep-{i}", f"fake-gpt-{i}")


def guarded_lane(i: int) -> Lane:
    return Lane(f"fake-g{i}", f"client-ep-g{i}", f"fake-gpt-g{i}")


def lane_providers(fake: FakeUpstream) -> list[dict[str, Any]]:
    """The providers for every lane, for the gateway's config."""
    providers = []
    for i in range(PLAIN_LANES):
        lane = plain_lane(i)
        providers.append(
            openai_provider(
                fake.endpoint_url(lane.endpoint),
                name=lane.provider,
                models=[lane.model],
                cooldown_after_failures=0,
            )
        )
    for i in range(GUARDED_LANES):
        lane = guarded_lane(i)
        providers.append(
            openai_provider(fake.endpoint_url(lane.endpoint), name=lane.provider, models=[lane.model])
        )
    return providers


def lane_models() -> set[str]:
    return {plain_lane(i).model for i in range(PLAIN_LANES)} | {
        guarded_lane(i).model for i in range(GUARDED_LANES)
    }
