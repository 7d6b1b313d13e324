"""Admission throughput: ensemble._native.RateLimiter vs a pure-Python dict-based equivalent.

Each operation is one admission over two scopes (per-key, then per-endpoint: 1 request + N
estimated tokens) followed by its reconcile with the real token count, as the server does.
Run: python benches/native/bench_ratelimit.py   (prints a table; not a timed test)
"""

from __future__ import annotations

import threading
import time

from ensemble._native import RateLimiter, build_profile


class PyRateLimiter:
    """Same job in plain Python: per scope a ring of (epoch, requests, tokens) slots, one lock."""

    def __init__(self, window_ms: int = 60_000, slots: int = 60) -> None:
        self.slot_ms = window_ms // slots
        self.slots = slots
        self.limits: dict[str, tuple[int, int]] = {}
        self.rings: dict[str, list[list[int]]] = {}
        self.lock = threading.Lock()

    def configure(self, scope: str, rpm: int, tpm: int) -> None:
        self.limits[scope] = (rpm, tpm)
        self.rings.setdefault(scope, [[-1, 0, 0] for _ in range(self.slots)])

    def _usage(self, ring: list[list[int]], epoch: int) -> tuple[int, int]:
        r = t = 0
        low = epoch - self.slots
        for e, rr, tt in ring:
            if e > low:
                r += rr
                t += tt
        return r, t

    def admit(self, scopes: list[str], tokens: int, now_ms: int) -> tuple[bool, int, int]:
        epoch = now_ms // self.slot_ms
        with self.lock:
            for i, scope in enumerate(scopes):
                limits = self.limits.get(scope)
                if limits is None:
                    continue
                rpm, tpm = limits
                r, t = self._usage(self.rings[scope], epoch)
                if (rpm and r + 1 > rpm) or (tpm and t + tokens > tpm):
                    return False, 1_000, i
            for scope in scopes:
                ring = self.rings.get(scope)
                if ring is None:
                    continue
                slot = ring[epoch % self.slots]
                if slot[0] != epoch:
                    slot[:] = [epoch, 0, 0]
                slot[1] += 1
                slot[2] += tokens
        return True, 0, -1

    def reconcile(self, scopes: list[str], reserved: int, actual: int, at_ms: int, now_ms: int) -> None:
        epoch = at_ms // self.slot_ms
        with self.lock:
            for scope in scopes:
                ring = self.rings.get(scope)
                if ring is None:
                    continue
                slot = ring[epoch % self.slots]
                if slot[0] == epoch:
                    slot[2] += actual - reserved


def run(limiter: RateLimiter | PyRateLimiter, n: int, n_keys: int) -> float:
    keys = [f"key:{i}" for i in range(n_keys)]
    ep = "ep:anthropic-primary:claude-sonnet-4-5"
    for k in keys:
        limiter.configure(k, 10**9, 10**12)
    limiter.configure(ep, 10**9, 10**12)
    pairs = [[keys[i % n_keys], ep] for i in range(1024)]
    admit, reconcile = limiter.admit, limiter.reconcile
    t0 = time.perf_counter()
    for i in range(n):
        scopes = pairs[i & 1023]
        now = i // 50  # ~50 admissions per ms: slots roll over during the run
        if not admit(scopes, 1_200, now)[0]:
            raise RuntimeError("limits are set high enough to always admit")
        reconcile(scopes, 1_200, 850, now, now)
    return time.perf_counter() - t0


def main() -> None:
    n = 200_000
    print(f"ensemble._native build: {build_profile}; admit(2 scopes) + reconcile per op; {n:,} ops")
    print(f"{'implementation':16} {'keys':>6} {'ops/s':>12} {'us/op':>7} {'speed-up':>9}")
    for n_keys in (10, 10_000):
        py = min(run(PyRateLimiter(), n, n_keys) for _ in range(3))
        rs = min(run(RateLimiter(), n, n_keys) for _ in range(3))
        print(f"{'python':16} {n_keys:6} {n / py:12,.0f} {py / n * 1e6:7.2f}")
        print(f"{'rust':16} {n_keys:6} {n / rs:12,.0f} {rs / n * 1e6:7.2f} {py / rs:8.1f}x")


if __name__ == "__main__":
    main()
