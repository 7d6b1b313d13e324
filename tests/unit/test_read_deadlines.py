"""server.read_timeout's sweeper (server/read_deadlines.py): overdue body reads are cut off, reads
that finished in time are never cancelled afterwards, and a cut-off task is left uncancelled."""

from __future__ import annotations

import asyncio

from ensemble.server.read_deadlines import ReadDeadlines


async def test_an_overdue_read_is_cancelled_and_reported_as_expired() -> None:
    deadlines = ReadDeadlines(0.2)
    outcome: list[object] = []

    async def read_forever() -> None:
        task = deadlines.begin()
        assert task is not None
        try:
            await asyncio.Event().wait()  # a body that never arrives
        except asyncio.CancelledError:
            outcome.append(deadlines.end(task))
            outcome.append(task.cancelling())
            return

    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.wait_for(loop.create_task(read_forever()), 5)
    took = loop.time() - started
    deadlines.close()
    assert outcome == [True, 0]  # expired, and its cancellation undone: the handler goes on (408)
    assert 0.2 <= took < 2, took


async def test_a_read_that_ended_in_time_is_left_alone() -> None:
    deadlines = ReadDeadlines(0.1)

    async def quick_then_slow() -> str:
        task = deadlines.begin()
        assert task is not None
        await asyncio.sleep(0)
        assert deadlines.end(task) is False
        await asyncio.sleep(0.4)  # well past the deadline, after the read: must not be cancelled
        return "done"

    assert await asyncio.wait_for(quick_then_slow(), 5) == "done"
    deadlines.close()


async def test_a_cancellation_that_is_not_a_deadline_stays_one() -> None:
    deadlines = ReadDeadlines(60)

    async def read() -> None:
        task = deadlines.begin()
        assert task is not None
        try:
            await asyncio.Event().wait()
        finally:
            assert deadlines.end(task) is False

    task = asyncio.get_running_loop().create_task(read())
    await asyncio.sleep(0)
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=5)
    assert task in done and task.cancelled()
    deadlines.close()
