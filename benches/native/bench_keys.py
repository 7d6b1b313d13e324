"""API-key lookups: ensemble._native.KeyTable vs a Python dict keyed by hashlib SHA-256 digests.

Run: python benches/native/bench_keys.py   (prints a table; not a timed test)
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable

from ensemble._native import KeyTable, build_profile

N_KEYS = 100_000
N_LOOKUPS = 300_000


def main() -> None:
    keys = ["ens_" + secrets.token_urlsafe(32) for _ in range(N_KEYS)]
    records = [{"id": i} for i in range(N_KEYS)]
    digests = [hashlib.sha256(k.encode()).digest() for k in keys]

    table = KeyTable()
    table.load(list(zip(digests, records, strict=True)))
    py_table = {d: (d, r) for d, r in zip(digests, records, strict=True)}

    def py_lookup(api_key: str) -> object | None:
        d = hashlib.sha256(api_key.encode()).digest()
        hit = py_table.get(d)
        if hit is None or not hmac.compare_digest(hit[0], d):
            return None
        return hit[1]

    hits = [keys[(i * 7919) % N_KEYS] for i in range(N_LOOKUPS)]
    misses = ["ens_" + secrets.token_urlsafe(32) for _ in range(N_LOOKUPS // 10)]
    assert table.lookup(hits[0]) is py_lookup(hits[0])

    def bench(fn: Callable[[str], object | None], inputs: list[str]) -> float:
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            for k in inputs:
                fn(k)
            best = min(best, time.perf_counter() - t0)
        return len(inputs) / best

    print(f"ensemble._native build: {build_profile}; {N_KEYS:,} keys loaded")
    print(f"{'case':6} {'implementation':28} {'lookups/s':>12} {'speed-up':>9}")
    for case, inputs in (("hit", hits), ("miss", misses)):
        py = bench(py_lookup, inputs)
        rs = bench(table.lookup, inputs)
        print(f"{case:6} {'python dict + hashlib + hmac':28} {py:12,.0f}")
        print(f"{case:6} {'rust KeyTable.lookup':28} {rs:12,.0f} {rs / py:8.1f}x")
    t0 = time.perf_counter()
    table.load(list(zip(digests, records, strict=True)))
    print(f"bulk load of {N_KEYS:,} keys: {(time.perf_counter() - t0) * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
