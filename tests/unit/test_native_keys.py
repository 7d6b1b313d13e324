"""ensemble._native.KeyTable and the small hashing helpers."""

from __future__ import annotations

import gc
import hashlib
import sys
import threading
import zlib

import pytest

from ensemble._native import KeyTable, constant_time_eq, prefix_fingerprint, sha256_digest


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def test_sha256_matches_hashlib() -> None:
    for s in ["", "ens_abc", "é€😀", "x" * 10_000]:
        assert sha256_digest(s) == digest(s)


def test_constant_time_eq() -> None:
    assert constant_time_eq(b"abc", b"abc")
    assert not constant_time_eq(b"abc", b"abd")
    assert not constant_time_eq(b"abc", b"abcd")
    assert constant_time_eq(b"", b"")


def test_prefix_fingerprint_is_cumulative_crc32c() -> None:
    assert prefix_fingerprint([b"123456789"]) == [0xE3069283]  # CRC-32C check value
    parts = [b"system prompt", b"user: hi", b"assistant: hello"]
    fps = prefix_fingerprint(parts)
    assert len(fps) == 3
    assert fps[:2] == prefix_fingerprint(parts[:2])
    assert fps[2] == prefix_fingerprint([b"".join(parts)])[0]
    assert fps[0] != zlib.crc32(parts[0])  # CRC32C, not zlib's CRC32
    assert prefix_fingerprint([]) == []


def test_load_lookup_upsert_remove() -> None:
    table = KeyTable()
    rec_a, rec_b = {"id": "a"}, {"id": "b"}
    table.load([(digest("ens_a"), rec_a), (digest("ens_b"), rec_b)])
    assert len(table) == 2
    assert table.lookup("ens_a") is rec_a
    assert table.lookup_digest(digest("ens_b")) is rec_b
    assert table.lookup("ens_c") is None
    table.upsert(digest("ens_c"), "C")
    table.upsert(digest("ens_a"), "A2")
    assert table.lookup("ens_a") == "A2"
    assert table.remove(digest("ens_b"))
    assert not table.remove(digest("ens_b"))
    assert table.lookup("ens_b") is None
    table.load([])
    assert len(table) == 0
    assert table.lookup("ens_c") is None


def test_unencodable_key_matches_nothing() -> None:
    table = KeyTable()
    table.upsert(digest("ens_a"), 1)
    assert table.lookup("ens_\udcff") is None  # lone surrogate: no error, no match
    assert table.lookup("") is None


def test_bad_digest_length() -> None:
    table = KeyTable()
    with pytest.raises(ValueError, match="32 bytes"):
        table.upsert(b"short", 1)
    with pytest.raises(ValueError, match="32 bytes"):
        table.load([(digest("a"), 1), (b"x" * 31, 2)])
    assert len(table) == 0  # a failed load changes nothing
    with pytest.raises(ValueError):
        table.remove(b"")


def test_no_reference_leaks() -> None:
    table = KeyTable()
    record = object()
    before = sys.getrefcount(record)
    table.upsert(digest("k"), record)
    for _ in range(1_000):
        assert table.lookup("k") is record
    assert sys.getrefcount(record) == before + 1
    table.remove(digest("k"))
    assert sys.getrefcount(record) == before


def test_record_finalizer_may_use_table() -> None:
    """Displaced records are dropped after the table lock is released (no self-deadlock)."""
    table = KeyTable()
    seen: list[object] = []

    class Record:
        def __del__(self) -> None:
            seen.append(table.lookup("other"))

    table.upsert(digest("other"), "still here")
    table.upsert(digest("k"), Record())
    table.upsert(digest("k"), "replaced")
    table.load([(digest("other"), "new")])
    gc.collect()
    assert seen == ["still here"]


def test_concurrent_lookup_and_upsert() -> None:
    table = KeyTable()
    table.load([(digest(f"k{i}"), i) for i in range(100)])
    errors: list[str] = []

    def reader() -> None:
        for i in range(5_000):
            if table.lookup(f"k{i % 100}") != i % 100:
                errors.append(f"k{i % 100}")

    def writer() -> None:
        for i in range(5_000):
            table.upsert(digest(f"k{i % 100}"), i % 100)

    threads = [threading.Thread(target=reader) for _ in range(3)] + [threading.Thread(target=writer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(table) == 100
