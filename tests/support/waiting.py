"""Waiting on a condition, never on a fixed sleep: a test states what it waits for and fails, naming
it, when that does not happen in time. (A sleep that is itself the behaviour under test, such as a
client that pauses on purpose, says so in a comment where it stands.)"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

INTERVAL_S = 0.02


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 5.0,
    what: str = "the condition",
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Call `predicate` until it returns something truthy, and return that. Exceptions of the types
    in `ignore` count as "not yet" (e.g. a server still starting refuses connections)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
            if value:
                return value
        except ignore:
            pass
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not met within {timeout}s")
        time.sleep(INTERVAL_S)
