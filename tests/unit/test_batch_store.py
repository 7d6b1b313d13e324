"""BatchStore on a real SQLite file: claims are exclusive across connections (workers/processes),
leases expire, cancel and finalize move a batch through its states."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from ensemble.batch.store import BatchStore, NewItem, now_ms
from ensemble.storage import database


def migrated(path: Path) -> str:
    conn = database.connect_sync(str(path))
    database.migrate(conn)
    conn.close()
    return str(path)


def items(n: int, route: str = "gateway") -> list[NewItem]:
    return [NewItem(f"c{i}", f"r{i}", "m", b"{}", route) for i in range(n)]


async def test_concurrent_claims_never_hand_out_an_item_twice(tmp_path: Path) -> None:
    path = migrated(tmp_path / "db.sqlite")
    stores = [BatchStore(await database.connect(path)) for _ in range(4)]
    try:
        now = now_ms()
        await stores[0].create("b1", "k", "native", items(200), ready_ms=now, expires_ms=now + 60_000)

        async def drain(store: BatchStore, owner: str) -> list[int]:
            got: list[int] = []
            while True:
                claimed = await store.claim(owner, "gateway", 7, 60_000)
                if not claimed:
                    return got
                got += [c.idx for c in claimed]

        results = await asyncio.gather(*(drain(s, f"w{i}") for i, s in enumerate(stores)))
        everything = [idx for r in results for idx in r]
        assert sorted(everything) == list(range(200))  # each exactly once
    finally:
        for s in stores:
            await s.close()


async def test_an_expired_lease_is_taken_over_and_the_old_owner_cannot_finish(tmp_path: Path) -> None:
    path = migrated(tmp_path / "db.sqlite")
    store = BatchStore(await database.connect(path))
    try:
        now = now_ms()
        await store.create("b1", "k", "native", items(1), ready_ms=now, expires_ms=now + 60_000)
        (first,) = await store.claim("dead-worker", "gateway", 10, lease_ms=1)
        await asyncio.sleep(0.01)  # the behaviour under test: the 1 ms lease runs out
        (again,) = await store.claim("live-worker", "gateway", 10, lease_ms=60_000)
        assert again.idx == first.idx
        assert not await store.finish(first, "dead-worker", "succeeded", b'{"type":"succeeded"}')
        assert await store.finish(again, "live-worker", "succeeded", b'{"type":"succeeded"}')
        row = await store.get("b1", "k")
        assert row is not None and row.status == "ended" and row.counts["succeeded"] == 1
        assert await store.get("b1", "another-key") is None
    finally:
        await store.close()


async def test_cancel_marks_queued_items_and_ends_when_running_ones_finish(tmp_path: Path) -> None:
    path = migrated(tmp_path / "db.sqlite")
    store = BatchStore(await database.connect(path))
    try:
        now = now_ms()
        await store.create("b1", "k", "native", items(3), ready_ms=now, expires_ms=now + 60_000)
        (running,) = await store.claim("w", "gateway", 1, 60_000)
        assert await store.cancel("b1", "k")
        row = await store.get("b1", "k")
        assert row is not None and row.status == "canceling" and row.counts["canceled"] == 2
        assert row.cancel_initiated_at is not None
        await store.finish(running, "w", "succeeded", b'{"type":"succeeded"}')
        row = await store.get("b1", "k")
        assert row is not None and row.status == "ended"
        results = await store.results("b1")
        assert [(c, r["type"]) for c, _, r in results] == [
            ("c0", "succeeded"),
            ("c1", "canceled"),
            ("c2", "canceled"),
        ]
        assert not await store.cancel("nope", "k")
    finally:
        await store.close()


async def test_queued_items_past_expiry_are_expired(tmp_path: Path) -> None:
    path = migrated(tmp_path / "db.sqlite")
    store = BatchStore(await database.connect(path))
    try:
        now = now_ms()
        await store.create("b1", "k", "native", items(2), ready_ms=now, expires_ms=now - 1)
        assert await store.expire() == 1
        row = await store.get("b1", "k")
        assert row is not None and row.status == "ended" and row.counts["expired"] == 2
    finally:
        await store.close()


async def test_fallback_batches_collect_per_key_up_to_the_size_limit(tmp_path: Path) -> None:
    path = migrated(tmp_path / "db.sqlite")
    store = BatchStore(await database.connect(path))
    try:
        far = now_ms() + 60_000
        ids = [
            await store.join_fallback(
                f"new{i}",
                "k",
                NewItem(f"q{i}", f"q{i}", "m", b"{}", "gateway"),
                window_ms=30_000,
                max_size=2,
                expires_ms=far,
            )
            for i in range(3)
        ]
        assert ids == ["new0", "new0", "new2"]  # two fill the first batch; the third starts another
        other = await store.join_fallback(
            "x",
            "other-key",
            NewItem("o", "o", "m", b"{}", "gateway"),
            window_ms=30_000,
            max_size=2,
            expires_ms=far,
        )
        assert other == "x"
        # the full batch is ready at once; the collecting one waits for its window
        assert [c.request_id for c in await store.claim("w", "gateway", 10, 60_000)] == ["q0", "q1"]
        conn = sqlite3.connect(path)
        statuses = dict(conn.execute("SELECT request_id, status FROM responses").fetchall())
        conn.close()
        assert statuses == {"q0": "pending", "q1": "pending", "q2": "pending", "o": "pending"}
    finally:
        await store.close()
