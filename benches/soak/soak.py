"""Soak: many concurrent slow streams through ONE Ensemble worker on loopback.

    python benches/soak/soak.py      # 10,000 streams (8,000 SSE + 2,000 WebSocket), 100 tokens x 100 ms

Builds and starts the Go load rig in `benches/soak/rig/` (`rig fake`: an OpenAI-format upstream that
streams `--chunks` tokens `--gap-ms` apart; `rig clients`: the streams), one `ensemble serve`
worker between them, and reports the worker's RSS per open stream, its event-loop lag (the worker
logs p50/p99/max every 2 s), the clients' view (stream duration against the nominal
chunks x gap, longest wait between reads) and errors (must be 0).

Why a Go rig: 10,000 streams at 100 ms gaps are 100,000 timed events/s leaving the upstream and
100,000 reads/s at the clients. The project's Python fake upstream and Python clients needed about
two cores for that on their own, on the same 2-core machine as the gateway; the Go rig needs a
fraction of one. The gateway under test is the real one, full pipeline (auth, rate limits, cost,
request log).

Why a WebSocket share: this machine's hard `ulimit -n` is 20,000 and cannot be raised without
root. A gateway worker holds one upstream socket per stream plus one client socket per HTTP stream,
so 10,000 HTTP streams would need ~20,050 descriptors; multiplexing part of the load (100 streams
per WebSocket) keeps one worker at 10,000 concurrent upstream streams within the limit.

Not a timed test: it prints a table and exits non-zero on any error. Bounded in time (~1 min with
the defaults, `--timeout` at most).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import yaml

BIN = Path(sys.executable).parent
RIG = Path(__file__).resolve().parent / "rig"
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


def build_rig(work: Path) -> Path:
    if shutil.which("go") is None:
        raise SystemExit("the soak's load rig is written in Go: install Go (https://go.dev/dl/) and retry")
    out = work / "rig"
    subprocess.run(["go", "build", "-o", str(out), "."], cwd=RIG, check=True)
    return out


def write_config(work: Path, gw_port: int, fake_addr: str, connect_timeout: str) -> list[str]:
    (work / "providers").mkdir()
    (work / "ensemble.yaml").write_text(
        yaml.safe_dump(
            {
                "server": {"host": "127.0.0.1", "port": gw_port, "workers": 1},
                "database": {"path": str(work / "data" / "ensemble.db")},
                "logging": {"level": "info", "format": "json"},
                "provider_timeouts": {"connect": connect_timeout},
            }
        )
    )
    (work / "providers" / "fake.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "fake",
                "type": "openai",
                "base_url": f"http://{fake_addr}/soak",
                "endpoints": [{"id": "fake-1", "api_key": "sk-soak-000000000000"}],
                "models": [{"name": MODEL, "pricing": {"input": 1.0, "output": 2.0}}],
            }
        )
    )
    return ["--config", str(work / "ensemble.yaml")]


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    ap.add_argument("--http", type=int, default=8000, help="SSE streams, one connection each (default 8000)")
    ap.add_argument(
        "--ws", type=int, default=2000, help="streams multiplexed 100 per WebSocket (default 2000)"
    )
    ap.add_argument(
        "--chunks", type=int, default=600, help="tokens per answer (default 600: each stream lasts a minute)"
    )
    ap.add_argument("--gap-ms", type=float, default=100.0, help="gap between tokens (default 100)")
    ap.add_argument(
        "--rate", type=float, default=500.0, help="new streams per second while ramping (default 500)"
    )
    ap.add_argument("--connect-timeout", default="30s", help="provider_timeouts.connect for the gateway")
    ap.add_argument("--timeout", type=float, default=300.0, help="give up after this many seconds")
    ap.add_argument("--show-lag", action="store_true", help="print each 2 s window's lag and GC line")
    args = ap.parse_args()
    raise_nofile()
    total = args.http + args.ws
    work = Path(tempfile.mkdtemp(prefix="ensemble-soak-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        rig = build_rig(work)
        fake = subprocess.Popen(
            [str(rig), "fake", "-chunks", str(args.chunks), "-gap", f"{args.gap_ms}ms"],
            stdout=subprocess.PIPE,
            stderr=open(work / "fake.log", "wb"),  # noqa: SIM115
        )
        procs.append(fake)
        assert fake.stdout is not None
        fake_addr = fake.stdout.readline().decode().split()[-1]
        gw_port = free_port()
        cfg = write_config(work, gw_port, fake_addr, args.connect_timeout)
        env = {**os.environ, "ENSEMBLE_ENVIRONMENT": "development", "ENSEMBLE_LOOP_LAG_REPORT": "2"}
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
        wait_port(gw_port)
        time.sleep(1.0)
        workers = [p for p in descendants(gw.pid) if "ensemble" in Path(f"/proc/{p}/cmdline").read_text()]
        worker = max(workers or [gw.pid], key=rss_mb)
        baseline = rss_mb(worker)
        cpu0, fake_cpu0 = cpu_seconds(worker), cpu_seconds(fake.pid)
        nominal_s = args.chunks * args.gap_ms / 1000
        print(
            f"gateway worker pid {worker}: baseline RSS {baseline:.1f} MB; {total} streams "
            f"({args.http} SSE + {args.ws} WebSocket), {args.chunks} tokens x {args.gap_ms:g} ms "
            f"(~{total * 1000 / args.gap_ms:,.0f} events/s when all are open)",
            flush=True,
        )

        clients = subprocess.Popen(
            [
                str(rig),
                "clients",
                "-addr",
                f"127.0.0.1:{gw_port}",
                "-key",
                key,
                "-model",
                MODEL,
                "-http",
                str(args.http),
                "-ws",
                str(args.ws),
                "-rate",
                str(args.rate),
                "-timeout",
                f"{args.timeout}s",
            ],
            stdout=subprocess.PIPE,
        )
        procs.append(clients)
        t0 = time.monotonic()
        status: dict[str, Any] = {"open": 0, "done": 0, "errors": 0}
        final: dict[str, Any] = {}

        def read_status() -> None:
            assert clients.stdout is not None
            for line in clients.stdout:
                msg = orjson.loads(line)
                status.update(msg)
                if msg["final"]:
                    final.update(msg)

        reader = threading.Thread(target=read_status, daemon=True)
        reader.start()
        peak_open, peak_rss, rss_at_peak = 0, baseline, baseline
        ramp_s: float | None = None
        while clients.poll() is None and time.monotonic() - t0 < args.timeout + 10:
            time.sleep(0.5)
            now_open, rss = int(status["open"]), rss_mb(worker)
            peak_rss = max(peak_rss, rss)
            if now_open > peak_open:
                peak_open, rss_at_peak = now_open, rss
            if ramp_s is None and now_open >= total:
                ramp_s = time.monotonic() - t0
            print(
                f"  t={time.monotonic() - t0:5.1f}s open={now_open:6d} done={status['done']:6d} "
                f"errors={status['errors']} rss={rss:7.1f} MB",
                flush=True,
            )
        reader.join(5)
        elapsed = time.monotonic() - t0
        gw_cpu, fake_cpu = cpu_seconds(worker) - cpu0, cpu_seconds(fake.pid) - fake_cpu0
        timed_out = not final or bool(final.get("timed_out"))
        lags = [
            tuple(float(x) for x in m.groups())
            for m in re.finditer(r"loop lag p50=([\d.]+)ms p99=([\d.]+)ms max=([\d.]+)ms", gw_log.read_text())
        ]
        done, errors = int(status["done"]), int(status["errors"])
        per_stream_kb = (rss_at_peak - baseline) * 1024 / peak_open if peak_open else 0.0
        dur, gaps = final.get("duration_ms", {}), final.get("max_gap_ms", {})
        print()
        print("| metric | value |")
        print("|---|---|")
        print(f"| concurrent streams (peak open) | {peak_open:,} of {total:,} |")
        print(f"| time until all were open | {ramp_s:.1f} s |" if ramp_s else "| all open at once | no |")
        print(f"| streams completed | {done:,} |")
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
        if dur:
            print(
                f"| stream duration p50 / p99 / max (nominal {nominal_s:g} s) | "
                f"{dur['p50'] / 1000:.2f} / {dur['p99'] / 1000:.2f} / {dur['max'] / 1000:.2f} s |"
            )
            print(
                f"| longest wait between reads, per stream: p50 / p99 / max (nominal {args.gap_ms:g} ms) | "
                f"{gaps['p50']:.0f} / {gaps['p99']:.0f} / {gaps['max']:.0f} ms |"
            )
        print(f"| gateway worker CPU | {gw_cpu:.1f} s ({100 * gw_cpu / elapsed:.0f}% of one core) |")
        print(f"| rig upstream CPU | {fake_cpu:.1f} s ({100 * fake_cpu / elapsed:.0f}% of one core) |")
        print(f"| wall time | {elapsed:.1f} s |")
        if args.show_lag:
            print("\nper 2 s window (gateway log):")
            for line in gw_log.read_text().splitlines():
                if "loop lag" in line:
                    print("  " + orjson.loads(line)["msg"])
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
