"""Upstream client cost: CPU time per request of each UpstreamClient against the fake upstream.

CPU seconds spent in *this* process per request (time.process_time) is what the client costs the
proxy; it stays meaningful on a busy machine where wall-clock req/s does not. Both clients run in
the same process, interleaved, against one fake upstream on another core.

    python benches/upstream/bench_clients.py [--requests 20000] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time

import httpx
import orjson
import uvloop

sys.path.insert(0, "tests")
from ensemble.upstream.client import AiohttpClient, UpstreamClient
from ensemble.upstream.http1 import Http1Client
from support.processes import free_port

BODY = orjson.dumps(
    {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 64}
)
SSE_BODY = orjson.dumps(
    {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "stream": True}
)
HEADERS = {"Authorization": "Bearer sk-bench", "Content-Type": "application/json"}


async def run(
    client: UpstreamClient, url: str, body: bytes, requests: int, concurrency: int
) -> tuple[float, float]:
    stream = body is SSE_BODY
    left = requests

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            resp = await client.post(url, HEADERS, body)
            if stream:
                async for _ in resp.chunks():
                    pass
                resp.release()
            else:
                await resp.read()

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return (time.process_time() - cpu) / requests * 1e6, requests / (time.perf_counter() - wall)


def start_fake() -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    fake = subprocess.Popen(
        ["taskset", "-c", "1", sys.executable, "-m", "ensemble.fake_upstream", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(100):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/_fake/health").status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    return fake, port


async def main(args: argparse.Namespace, port: int) -> None:
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    rows = []
    for fmt, body in (("json", BODY), ("sse", SSE_BODY)):
        for rnd in range(args.rounds):
            for name, cls in (("http1", Http1Client), ("aiohttp", AiohttpClient)):
                client: UpstreamClient = cls(connect_timeout=5, read_timeout=30)
                await client.start()
                await run(client, url, body, 500, args.concurrency)  # warm the pool
                us, rps = await run(client, url, body, args.requests, args.concurrency)
                await client.close()
                rows.append((fmt, name, rnd, us, rps))
    print(f"{'fmt':<5} {'client':<8} {'CPU µs/request (best)':>22} {'req/s (best)':>13}")
    for fmt in ("json", "sse"):
        for name in ("http1", "aiohttp"):
            mine = [r for r in rows if r[0] == fmt and r[1] == name]
            print(f"{fmt:<5} {name:<8} {min(r[3] for r in mine):>22.1f} {max(r[4] for r in mine):>13,.0f}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=10000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    fake, port = start_fake()
    try:
        uvloop.run(main(ap.parse_args(), port))
    finally:
        fake.terminate()
        fake.wait(10)
