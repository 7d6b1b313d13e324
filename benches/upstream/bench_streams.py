"""Many concurrent SSE streams to one provider host, over HTTP/1.1 and over HTTP/2 (`make bench-h2`).

Each round opens `--streams` streams at once to one fake-upstream endpoint (Granian, pinned to
core 1, one worker; the client is not pinned unless `--pin`) that paces `--events` events `--gap-ms`
apart, and reads them all to the end, except `--cancel` of them, which hang up after their third
event. Reported per protocol: upstream connections *as the fake counted them* (distinct client
connections that carried requests), this process's CPU time per event (every thread, so the
HTTP/2 pool's thread counts), wall time, and over HTTP/2 how long after the hang-up the fake saw
each cancelled stream reset (RST_STREAM; both clocks are this machine's). HTTP/1.1 needs one connection per concurrent stream; HTTP/2 multiplexes them on at most
`provider_timeouts.max_connections_per_host` (100). Rounds alternate the protocols; the summary
gives each one's best round, the median of the per-round HTTP/2 : HTTP/1.1 ratios, and the load
average, and checks the pool's targets (docs/performance.md, "Upstream HTTP/2").

    python benches/upstream/bench_streams.py [--streams 2000] [--events 40] [--gap-ms 50] [--rounds 3]
        [--cancel 50] [--pin] [--check]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import uvloop

sys.path.insert(0, "tests")
sys.path.insert(0, str(Path(__file__).parent))
from bench_clients import start_fake

from ensemble.upstream.client import UpstreamClient
from ensemble.upstream.http1 import Http1Client
from ensemble.upstream.http2 import Http2Client

BODY = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "stream": True})
HEADERS = {"Authorization": "Bearer sk-bench", "Content-Type": "application/json"}


# The pool's targets (issue 22): connections for 2,000 streams, CPU per event against HTTP/1.1,
# and the hang-up to upstream-close delay.
MAX_CONNECTIONS = 100
MAX_CPU_RATIO = 1.0
MAX_CANCEL_MS = 100.0


@dataclass
class Round:
    events: int
    cpu: float
    wall: float
    connections: int
    cancel_ms: list[float]

    @property
    def us_per_event(self) -> float:
        return self.cpu / self.events * 1e6


async def one_round(
    client: UpstreamClient, url: str, cancel_url: str, streams: int, cancel: int
) -> tuple[int, float, float, dict[str, float]]:
    """(events, CPU seconds, wall seconds, {cancel id: hang-up time}) for `streams` concurrent
    streams, `cancel` of which hang up after their third event."""

    async def stream() -> int:
        resp = await client.post(url, HEADERS, BODY, stream=True)
        events = 0
        async for chunk in resp.chunks():
            events += chunk.count(b"\n\n")
        resp.release()
        return events

    async def hang_up(tag: str) -> int:
        resp = await client.post(cancel_url, {**HEADERS, "X-Bench-Cancel": tag}, BODY, stream=True)
        events = 0
        async for chunk in resp.chunks():
            events += chunk.count(b"\n\n")
            if events >= 3:
                break
        resp.close()
        closed[tag] = time.time()
        return events

    closed: dict[str, float] = {}
    every = streams // cancel if cancel else 0
    cpu, wall = time.process_time(), time.perf_counter()
    counts = await asyncio.gather(
        *(
            hang_up(str(i)) if every and i % every == 0 and len(closed) < cancel else stream()
            for i in range(streams)
        )
    )
    return sum(counts), time.process_time() - cpu, time.perf_counter() - wall, closed


async def cancel_delays(control: httpx.AsyncClient, endpoint: str, closed: dict[str, float]) -> list[float]:
    """Milliseconds from each hang-up to the fake seeing that stream close."""
    deadline = time.monotonic() + 10
    while True:
        records = (await control.get("/_fake/requests", params={"endpoint": endpoint})).json()["requests"]
        seen = {r["headers"].get("x-bench-cancel"): r["disconnected_at"] for r in records}
        if all(seen.get(tag) for tag in closed) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    return sorted((seen[tag] - at) * 1000 if seen.get(tag) else float("inf") for tag, at in closed.items())


async def main(args: argparse.Namespace, port: int) -> bool:
    base = f"http://127.0.0.1:{port}"
    rows: dict[str, list[Round]] = {name: [] for name in args.protocols.split(",")}
    control = httpx.AsyncClient(base_url=base)
    for rnd in range(args.rounds):
        for name in rows:
            endpoint, cancelled = f"{name}-{rnd}", f"{name}-{rnd}-cancel"
            for ep, record in ((endpoint, False), (cancelled, True)):
                await control.post("/_fake/reset", json={"endpoint": ep})
                await control.put("/_fake/config", json={"endpoint": ep, "record": record})
            client: UpstreamClient
            if name == "http1":
                client = Http1Client(connect_timeout=30, read_timeout=60)
            else:
                client = Http2Client(
                    connect_timeout=30, read_timeout=60, max_connections_per_host=MAX_CONNECTIONS
                )
            await client.start()
            events, cpu, wall, closed = await one_round(
                client,
                f"{base}/{endpoint}/v1/chat/completions",
                f"{base}/{cancelled}/v1/chat/completions",
                args.streams,
                args.cancel,
            )
            await client.close()
            # Summed over the two endpoints: exact over HTTP/1.1 (every stream its own connection),
            # an upper bound over HTTP/2, where one connection carries both endpoints' streams.
            conns = 0
            for ep in (endpoint, cancelled):
                seen = (await control.get("/_fake/connections", params={"endpoint": ep})).json()
                conns += sum(seen["connections"].values())
            # Over HTTP/1.1 a hang-up closes the connection, which the fake notices only when it next
            # writes (or not at all under load): both protocols hang up alike, so the load is the
            # same, but the delay is measured where it is a target, for the RST_STREAM.
            delays = await cancel_delays(control, cancelled, closed) if name == "http2" else []
            result = Round(events, cpu, wall, conns, delays)
            rows[name].append(result)
            print(
                f"round {rnd} {name}: {events} events, {result.us_per_event:.2f} µs CPU/event, "
                f"{wall:.1f} s, {conns} connections at the fake"
                + (f", cancel p50 {median(delays):.1f} ms" if delays else ""),
                flush=True,
            )
    await control.aclose()
    print(
        f"\n{args.streams} concurrent streams x {args.events} events, {args.gap_ms:g} ms apart, "
        f"{args.cancel} hang up after 3 events; client {'pinned to core 0' if args.pin else 'unpinned'}; "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    print(
        f"{'protocol':<9} {'connections (fake)':>19} {'CPU µs/event (best)':>20} {'wall s (best)':>14} "
        f"{'cancel ms p50 / p95 / max':>26}"
    )
    for name, results in rows.items():
        best = min(results, key=lambda r: r.us_per_event)
        delays = sorted(d for r in results for d in r.cancel_ms)
        print(
            f"{name:<9} {max(r.connections for r in results):>19} {best.us_per_event:>20.2f} "
            f"{min(r.wall for r in results):>14.1f} "
            + (f"{median(delays):>6.1f} / {p95(delays):.1f} / {max(delays):.1f}" if delays else f"{'-':>26}")
        )
    if "http1" not in rows or "http2" not in rows:
        return True
    return verdict(rows["http1"], rows["http2"], args.streams)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] if len(values) > 1 else median(values)


def verdict(http1: list[Round], http2: list[Round], streams: int) -> bool:
    """Print the pool's three targets, met or not; True when all are."""
    ratios = [b.us_per_event / a.us_per_event for a, b in zip(http1, http2, strict=True)]
    ratio = statistics.median(ratios)
    connections = max(r.connections for r in http2)
    worst_cancel = max((d for r in http2 for d in r.cancel_ms), default=0.0)
    checks = [
        (
            f"{streams} streams over HTTP/2: {connections} upstream connections (at most {MAX_CONNECTIONS})",
            connections <= MAX_CONNECTIONS,
        ),
        (
            f"CPU per event HTTP/2 : HTTP/1.1 = {ratio:.2f} (median of rounds "
            f"{', '.join(f'{r:.2f}' for r in ratios)}; at most {MAX_CPU_RATIO:.2f})",
            ratio <= MAX_CPU_RATIO,
        ),
        (
            f"disconnect-cancel: upstream stream closed {worst_cancel:.1f} ms after the hang-up at worst "
            f"(at most {MAX_CANCEL_MS:.0f})",
            worst_cancel <= MAX_CANCEL_MS,
        ),
    ]
    print()
    for text, ok in checks:
        print(f"{'met    ' if ok else 'NOT MET'} {text}")
    return all(ok for _, ok in checks)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", type=int, default=2000)
    ap.add_argument("--events", type=int, default=40)
    ap.add_argument("--gap-ms", type=float, default=50)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--protocols", default="http1,http2", help="comma-separated, in round order")
    ap.add_argument("--cancel", type=int, default=50, help="streams per round that hang up after 3 events")
    ap.add_argument("--check", action="store_true", help="exit 1 when a target is not met")
    ap.add_argument(
        "--pin",
        action="store_true",
        help="pin this process (both of the HTTP/2 client's threads) to core 0; default: unpinned, as "
        "a gateway worker runs",
    )
    options = ap.parse_args()
    if options.pin:
        os.sched_setaffinity(0, {0})
    fake, port = start_fake("--chunks", str(options.events), "--chunk-gap-ms", str(options.gap_ms))
    try:
        met = uvloop.run(main(options, port))
    finally:
        fake.terminate()
        fake.wait(10)
    sys.exit(0 if met or not options.check else 1)
