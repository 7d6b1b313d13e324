"""Many concurrent SSE streams to one provider host, over HTTP/1.1 and over HTTP/2.

Each round opens `--streams` streams at once to one fake-upstream endpoint (Granian, pinned to
core 1, one worker; the client is not pinned unless `--pin`) that paces `--events` events `--gap-ms` apart, and reads them all to the end.
Reported per protocol: upstream connections *as the fake counted them* (distinct client
connections that carried requests), this process's CPU time per event (every thread, so the
HTTP/2 pool's thread counts), and wall time. HTTP/1.1 needs one connection per concurrent stream;
HTTP/2 multiplexes them on at most `provider_timeouts.max_connections_per_host` (100).

    python benches/upstream/bench_streams.py [--streams 2000] [--events 40] [--gap-ms 50] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
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


async def one_round(client: UpstreamClient, url: str, streams: int) -> tuple[int, float, float]:
    """(events, CPU seconds, wall seconds) for `streams` concurrent streams read to the end."""

    async def stream() -> int:
        resp = await client.post(url, HEADERS, BODY, stream=True)
        events = 0
        async for chunk in resp.chunks():
            events += chunk.count(b"\n\n")
        resp.release()
        return events

    cpu, wall = time.process_time(), time.perf_counter()
    counts = await asyncio.gather(*(stream() for _ in range(streams)))
    return sum(counts), time.process_time() - cpu, time.perf_counter() - wall


async def main(args: argparse.Namespace, port: int) -> None:
    base = f"http://127.0.0.1:{port}"
    rows: dict[str, list[tuple[int, float, float, int]]] = {name: [] for name in args.protocols.split(",")}
    control = httpx.AsyncClient(base_url=base)
    for rnd in range(args.rounds):
        for name in rows:
            endpoint = f"{name}-{rnd}"
            await control.post("/_fake/reset", json={"endpoint": endpoint})
            await control.put("/_fake/config", json={"endpoint": endpoint, "record": False})
            client: UpstreamClient
            if name == "http1":
                client = Http1Client(connect_timeout=30, read_timeout=60)
            else:
                client = Http2Client(connect_timeout=30, read_timeout=60, max_connections_per_host=100)
            await client.start()
            events, cpu, wall = await one_round(
                client, f"{base}/{endpoint}/v1/chat/completions", args.streams
            )
            await client.close()
            seen = (await control.get("/_fake/connections", params={"endpoint": endpoint})).json()
            conns = sum(seen["connections"].values())
            rows[name].append((events, cpu, wall, conns))
            print(
                f"round {rnd} {name}: {events} events, {cpu / events * 1e6:.2f} µs CPU/event, "
                f"{wall:.1f} s, {conns} connections at the fake",
                flush=True,
            )
    await control.aclose()
    print(f"\n{args.streams} concurrent streams x {args.events} events, {args.gap_ms} ms apart")
    print(f"{'protocol':<9} {'connections (fake)':>19} {'CPU µs/event (best)':>20} {'wall s (best)':>14}")
    for name, results in rows.items():
        best = min(results, key=lambda r: r[1] / r[0])
        print(
            f"{name:<9} {max(r[3] for r in results):>19} {best[1] / best[0] * 1e6:>20.2f} "
            f"{min(r[2] for r in results):>14.1f}"
        )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", type=int, default=2000)
    ap.add_argument("--events", type=int, default=40)
    ap.add_argument("--gap-ms", type=float, default=50)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--protocols", default="http1,http2", help="comma-separated, in round order")
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
        uvloop.run(main(options, port))
    finally:
        fake.terminate()
        fake.wait(10)
