"""Soak: many concurrent slow streams through ONE Ensemble worker on loopback.

    python benches/soak/soak.py        # 10,000 streams: 8,000 SSE + 2,000 WebSocket, 70 x 1 s tokens
    python benches/soak/soak.py --http 2000 --ws 0 --chunks 150 --gap-ms 100   # 100 ms gaps

Starts the fake upstream (2 workers, every answer `--chunks` tokens `--gap-ms` apart), one
`ensemble serve` worker pointing at it, and client processes that open all streams at once and
read them to the end: `--http` SSE streams on `/api/v1/stream` (one TCP connection each) plus
`--ws` streams multiplexed 100 per WebSocket on `/api/v1/ws`. Reports the gateway worker's RSS per
open stream, its event-loop lag (the worker logs p50/p99/max every 2 s), and errors (must be 0).

Why a WebSocket share: this machine's hard `ulimit -n` is 20,000 and cannot be raised without
root. A gateway worker holds one upstream socket per stream plus one client socket per HTTP stream,
so 10,000 HTTP streams would need ~20,050 descriptors; multiplexing part of the load on WebSockets
keeps one worker at 10,000 concurrent upstream streams within the limit.

Why 1 s gaps by default: 10,000 streams at 100 ms gaps are 100,000 events/s through the fake
upstream, the gateway and the clients, all on the same (shared, 2-core) machine; the rig saturates
long before the gateway does (the gateway worker used ~40% of one core at 10,000 x 1 s). 100 ms gaps
are exercised with fewer streams (second command). `--connect-timeout 30s` (the default here) keeps
the CPU-starved loopback fake's slow accepts during the ramp from counting as provider failures.

Not a timed test: it prints a table. Bounded in time (~2 min with the defaults).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import yaml

BIN = Path(sys.executable).parent
HELLO = [{"role": "user", "content": "soak"}]
MODEL = "soak-model"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def raise_nofile() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listening on {port}")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            out.append(int(child))
            out.extend(descendants(int(child)))
    return out


FAKE_SCRIPT = """
import os, sys
from granian.constants import Interfaces, Loops
from granian.log import LogLevels
from granian.server import Server
os.environ["ENSEMBLE_FAKE_DEFAULTS"] = sys.argv[2]
Server("ensemble.fake_upstream.app:app_from_env", address="127.0.0.1", port=int(sys.argv[1]),
       interface=Interfaces.RSGI, workers=2, loop=Loops.uvloop, factory=True,
       log_level=LogLevels.warning, backlog=4096, backpressure=50000).serve()
"""


# -- clients --------------------------------------------------------------------------------------


async def http_stream(port: int, key: str, counters: dict[str, Any], start_at: float) -> None:
    body = orjson.dumps({"model": MODEL, "messages": HELLO})
    head = (
        f"POST /api/v1/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    await asyncio.sleep(max(start_at - time.monotonic(), 0.0))  # paced ramp-up
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(head + body)
        status = await reader.readline()
        if b" 200 " not in status:
            raise RuntimeError(status.decode(errors="replace").strip())
        with counters["open"].get_lock():
            counters["open"].value += 1
        tail = b""
        try:
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    raise RuntimeError("connection closed before the end of the stream")
                tail = (tail + chunk)[-4096:]
                if b"event: error" in tail:
                    raise RuntimeError("error event: " + tail.decode(errors="replace")[-300:])
                if b"event: done" in tail and tail.endswith(b"0\r\n\r\n"):
                    break
        finally:
            with counters["open"].get_lock():
                counters["open"].value -= 1
            writer.close()
        with counters["done"].get_lock():
            counters["done"].value += 1
    except Exception as e:
        with counters["errors"].get_lock():
            counters["errors"].value += 1
        if counters["errors"].value <= 5:
            print(f"http stream error: {type(e).__name__}: {e}", file=sys.stderr, flush=True)


async def ws_socket(
    port: int, key: str, n: int, counters: dict[str, Any], base: int, start_at: float, rate: float
) -> None:
    import websockets

    await asyncio.sleep(max(start_at - time.monotonic(), 0.0))
    try:
        async with websockets.connect(f"ws://127.0.0.1:{port}/api/v1/ws", max_size=None) as ws:
            await ws.send(orjson.dumps({"type": "auth", "api_key": key}).decode())
            assert orjson.loads(await ws.recv())["type"] == "ready"

            async def send_all() -> None:
                for i in range(n):
                    await asyncio.sleep(max(start_at + i / rate - time.monotonic(), 0.0))
                    msg = {
                        "type": "request",
                        "request_id": f"soak-{base}-{i}",
                        "model": MODEL,
                        "messages": HELLO,
                    }
                    await ws.send(orjson.dumps(msg).decode())

            sender = asyncio.ensure_future(send_all())
            started: set[str] = set()  # a WebSocket stream counts as open from its first block
            remaining = n
            while remaining:
                msg = orjson.loads(await ws.recv())
                if msg["type"] == "block":
                    if msg["request_id"] not in started:
                        started.add(msg["request_id"])
                        with counters["open"].get_lock():
                            counters["open"].value += 1
                elif msg["type"] == "done":
                    remaining -= 1
                    with counters["open"].get_lock():
                        counters["open"].value -= msg["request_id"] in started
                    with counters["done"].get_lock():
                        counters["done"].value += 1
                elif msg["type"] == "error":
                    remaining -= 1
                    with counters["open"].get_lock():
                        counters["open"].value -= msg["request_id"] in started
                    with counters["errors"].get_lock():
                        counters["errors"].value += 1
                    print(f"ws error: {msg}", file=sys.stderr, flush=True)
            await sender
    except Exception as e:
        with counters["errors"].get_lock():
            counters["errors"].value += 1
        print(f"ws socket error: {type(e).__name__}: {e}", file=sys.stderr, flush=True)


def client_main(kind: str, port: int, key: str, n: int, counters: dict[str, Any], rate: float) -> None:
    """`n` streams started at `rate` per second (this process's share of the ramp)."""
    import uvloop

    raise_nofile()

    async def run() -> None:
        t0 = time.monotonic() + 0.5
        if kind == "http":
            await asyncio.gather(*(http_stream(port, key, counters, t0 + i / rate) for i in range(n)))
        else:
            per = 100
            sockets = range(0, n, per)
            # each socket gets an equal share of the rate; sockets start together
            await asyncio.gather(
                *(
                    ws_socket(port, key, min(per, n - i), counters, i, t0, rate / len(sockets))
                    for i in sockets
                )
            )

    uvloop.run(run())


# -- driver ---------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--http", type=int, default=8000, help="SSE streams, one connection each")
    ap.add_argument("--ws", type=int, default=2000, help="streams multiplexed on WebSockets (100/socket)")
    ap.add_argument("--chunks", type=int, default=70, help="tokens per answer")
    ap.add_argument("--gap-ms", type=float, default=1000.0, help="gap between tokens")
    ap.add_argument("--client-procs", type=int, default=4)
    ap.add_argument("--rate", type=float, default=220.0, help="new streams per second during ramp-up")
    ap.add_argument("--connect-timeout", default="30s", help="provider_timeouts.connect for the gateway")
    ap.add_argument("--timeout", type=float, default=150.0)
    args = ap.parse_args()
    raise_nofile()
    total = args.http + args.ws
    work = Path(tempfile.mkdtemp(prefix="ensemble-soak-"))
    fake_port, gw_port = free_port(), free_port()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        defaults = orjson.dumps({"chunks": args.chunks, "chunk_gap_ms": args.gap_ms, "record": False})
        fake = subprocess.Popen(
            [sys.executable, "-c", FAKE_SCRIPT, str(fake_port), defaults.decode()],
            stdout=subprocess.DEVNULL,
            stderr=open(work / "fake.log", "wb"),  # noqa: SIM115
        )
        procs.append(fake)
        (work / "providers").mkdir()
        (work / "ensemble.yaml").write_text(
            yaml.safe_dump(
                {
                    "server": {"host": "127.0.0.1", "port": gw_port, "workers": 1},
                    "database": {"path": str(work / "data" / "ensemble.db")},
                    "logging": {"level": "info", "format": "json"},
                    "provider_timeouts": {"connect": args.connect_timeout},
                }
            )
        )
        (work / "providers" / "fake.yaml").write_text(
            yaml.safe_dump(
                {
                    "name": "fake",
                    "type": "openai",
                    "base_url": f"http://127.0.0.1:{fake_port}/soak",
                    "endpoints": [{"id": "fake-1", "api_key": "sk-soak-000000000000"}],
                    "models": [{"name": MODEL, "pricing": {"input": 1.0, "output": 2.0}}],
                }
            )
        )
        env = {**os.environ, "ENSEMBLE_ENVIRONMENT": "development", "ENSEMBLE_LOOP_LAG_REPORT": "2"}
        cfg = ["--config", str(work / "ensemble.yaml")]
        key = subprocess.run(
            [str(BIN / "ensemble"), "keys", "create", "--name", "soak", *cfg],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        gw_log = work / "gateway.log"
        gw = subprocess.Popen(
            [str(BIN / "ensemble"), "serve", *cfg],
            env=env,
            stdout=open(gw_log, "wb"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
        )
        procs.append(gw)
        wait_port(fake_port)
        wait_port(gw_port)
        time.sleep(1.0)
        workers = [p for p in descendants(gw.pid) if "ensemble" in Path(f"/proc/{p}/cmdline").read_text()]
        worker = max(workers or [gw.pid], key=rss_mb)
        baseline = rss_mb(worker)
        cpu0 = cpu_seconds(worker)
        print(
            f"gateway worker pid {worker}: baseline RSS {baseline:.1f} MB; {total} streams "
            f"({args.http} SSE + {args.ws} WebSocket), {args.chunks} tokens x {args.gap_ms:g} ms",
            flush=True,
        )

        ctx = mp.get_context("spawn")
        counters = {name: ctx.Value("i", 0) for name in ("open", "done", "errors")}
        clients = []
        per = -(-args.http // args.client_procs)
        for i in range(args.client_procs):
            n = min(per, args.http - i * per)
            if n > 0:
                share = args.rate * n / total
                clients.append(
                    ctx.Process(target=client_main, args=("http", gw_port, key, n, counters, share))
                )
        if args.ws:
            share = args.rate * args.ws / total
            clients.append(
                ctx.Process(target=client_main, args=("ws", gw_port, key, args.ws, counters, share))
            )
        t0 = time.monotonic()
        for c in clients:
            c.start()
        peak_open, peak_rss, rss_at_peak = 0, baseline, baseline
        ramp_s: float | None = None
        while any(c.is_alive() for c in clients) and time.monotonic() - t0 < args.timeout:
            time.sleep(0.5)
            now_open = counters["open"].value
            rss = rss_mb(worker)
            peak_rss = max(peak_rss, rss)
            if now_open > peak_open:
                peak_open, rss_at_peak = now_open, rss
            if ramp_s is None and now_open >= total:
                ramp_s = time.monotonic() - t0
            print(
                f"  t={time.monotonic() - t0:5.1f}s open={now_open:6d} done={counters['done'].value:6d} "
                f"errors={counters['errors'].value} rss={rss:7.1f} MB",
                flush=True,
            )
        elapsed = time.monotonic() - t0
        gw_cpu = cpu_seconds(worker) - cpu0
        timed_out = any(c.is_alive() for c in clients)
        for c in clients:
            if c.is_alive():
                c.terminate()
            c.join(5)
        lags = [
            tuple(float(x) for x in m.groups())
            for m in re.finditer(r"loop lag p50=([\d.]+)ms p99=([\d.]+)ms max=([\d.]+)ms", gw_log.read_text())
        ]
        done, errors = counters["done"].value, counters["errors"].value
        per_stream_kb = (rss_at_peak - baseline) * 1024 / peak_open if peak_open else 0.0
        print()
        print("| metric | value |")
        print("|---|---|")
        print(f"| concurrent streams (peak open) | {peak_open} of {total} |")
        print(f"| time until all were open | {ramp_s:.1f} s |" if ramp_s else "| all open at once | no |")
        print(f"| streams completed | {done} |")
        print(f"| errors | {errors}{' (timed out)' if timed_out else ''} |")
        print(
            f"| gateway worker RSS baseline / at peak / max | {baseline:.0f} / {rss_at_peak:.0f} / {peak_rss:.0f} MB |"
        )
        print(f"| memory per open stream | {per_stream_kb:.1f} KB |")
        if lags:
            print(
                f"| event-loop lag p50 (median of 2 s windows) | {sorted(w[0] for w in lags)[len(lags) // 2]:.1f} ms |"
            )
            print(f"| event-loop lag p99 (worst 2 s window) | {max(w[1] for w in lags):.1f} ms |")
            print(f"| event-loop lag max | {max(w[2] for w in lags):.1f} ms |")
        print(f"| gateway worker CPU | {gw_cpu:.1f} s ({100 * gw_cpu / elapsed:.0f}% of one core) |")
        print(f"| wall time | {elapsed:.1f} s |")
        if errors or timed_out:
            for name in ("gateway.log", "fake.log"):
                lines = [
                    x for x in (work / name).read_text(errors="replace").splitlines() if "loop lag" not in x
                ]
                print(f"\n--- last lines of {name} ---", *lines[-15:], sep="\n")
        return 0 if errors == 0 and not timed_out and done == total else 1
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
