"""Upstream client cost: CPU time per request of each UpstreamClient against the fake upstream.

CPU seconds spent in *this* process per request (time.process_time: every thread, so the HTTP/2
pool's own thread counts too) is what the client costs the proxy; it stays meaningful on a busy
machine where wall-clock req/s does not. The clients run in the same process, interleaved, against
one fake upstream on another core (Granian: HTTP/1.1, and h2c with prior knowledge for `http2`).

    python benches/upstream/bench_clients.py [--requests 20000] [--concurrency 64] [--tls]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson
import uvloop

sys.path.insert(0, "tests")
from ensemble.upstream.client import AiohttpClient, UpstreamClient
from ensemble.upstream.http1 import Http1Client
from ensemble.upstream.http2 import Http2Client
from support.processes import free_port
from support.tls import LocalCA

BODY = orjson.dumps(
    {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 64}
)
SSE_BODY = orjson.dumps(
    {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "stream": True}
)
HEADERS = {"Authorization": "Bearer sk-bench", "Content-Type": "application/json"}


CLIENTS: dict[str, type[Http1Client] | type[AiohttpClient] | type[Http2Client]] = {
    "http1": Http1Client,
    "http2": Http2Client,
    "aiohttp": AiohttpClient,
}


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


def start_fake(*options: str, ca: LocalCA | None = None) -> tuple[subprocess.Popen[bytes], int]:
    """The fake upstream on core 1, with CLI `options` (HTTPS with `ca`'s certificate when given);
    returns once it answers."""
    port = free_port()
    if ca is not None:
        options = (*options, "--tls-cert", str(ca.cert_file), "--tls-key", str(ca.key_file))
    fake = subprocess.Popen(
        ["taskset", "-c", "1", sys.executable, "-m", "ensemble.fake_upstream", "--port", str(port), *options],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    scheme = "https" if ca is not None else "http"
    verify = ssl.create_default_context(cafile=str(ca.ca_file)) if ca is not None else True
    for _ in range(100):
        try:
            if httpx.get(f"{scheme}://127.0.0.1:{port}/_fake/health", verify=verify).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    return fake, port


async def main(args: argparse.Namespace, port: int) -> None:
    url = f"{'https' if args.tls else 'http'}://127.0.0.1:{port}/v1/chat/completions"
    # aiohttp does not take its trust store from SSL_CERT_FILE; over TLS only our two clients run.
    clients = {k: v for k, v in CLIENTS.items() if not (args.tls and k == "aiohttp")}
    rows = []
    for fmt, body in (("json", BODY), ("sse", SSE_BODY)):
        for rnd in range(args.rounds):
            for name, cls in clients.items():
                client: UpstreamClient = cls(connect_timeout=5, read_timeout=30)
                await client.start()
                await run(client, url, body, 500, args.concurrency)  # warm the pool
                us, rps = await run(client, url, body, args.requests, args.concurrency)
                await client.close()
                rows.append((fmt, name, rnd, us, rps))
    print(f"{'fmt':<5} {'client':<8} {'CPU µs/request (best)':>22} {'req/s (best)':>13}")
    for fmt in ("json", "sse"):
        for name in clients:
            mine = [r for r in rows if r[0] == fmt and r[1] == name]
            print(f"{fmt:<5} {name:<8} {min(r[3] for r in mine):>22.1f} {max(r[4] for r in mine):>13,.0f}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=10000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--tls", action="store_true", help="HTTPS to the fake (ALPN h2 for http2), a CA made here"
    )
    options = ap.parse_args()
    ca = None
    if options.tls:
        ca = LocalCA(Path(tempfile.mkdtemp(prefix="bench-ca-")))
        os.environ["SSL_CERT_FILE"] = str(ca.ca_file)  # every client trusts it, nothing else
    fake, port = start_fake(ca=ca)
    try:
        uvloop.run(main(options, port))
    finally:
        fake.terminate()
        fake.wait(10)
