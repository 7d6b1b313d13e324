"""Soak: many concurrent slow streams through ONE Ensemble worker on loopback.

    python benches/soak/soak.py      # 10,000 streams (8,000 SSE + 2,000 WebSocket), 600 tokens x 100 ms
    python benches/soak/soak.py --gap-ms 1000 --chunks 70             # the same streams, 1 s apart
    python benches/soak/soak.py --http 3000 --ws 0 --chunks 300 --compare
    python benches/soak/soak.py --http 3000 --ws 0 --chunks 300 --compare --openai   # fast path

Builds and starts the Go load rig in `benches/soak/rig/` (`rig fake`: an OpenAI-format upstream that
streams `--chunks` tokens `--gap-ms` apart; `rig clients`: the streams), one `ensemble serve`
worker between them, and reports the worker's RSS per open stream, its event-loop lag (the worker
logs p50/p99/max every 2 s), the clients' view (stream duration against the nominal
chunks x gap, longest wait between reads) and errors (must be 0).

Why a Go rig: 10,000 streams at 100 ms gaps are 100,000 timed events/s leaving the upstream and
100,000 reads/s at the clients. The project's Python fake upstream and Python clients could not
produce that next to the gateway on this 2-core machine; the Go rig costs ~11 CPU µs per event
upstream and 4-14 µs at the clients (mostly the kernel's loopback TCP), which the table reports,
since at 100,000 events/s even that is more than a core. The gateway under test is the real one,
full pipeline (auth, rate limits, cost, request log).

Why a WebSocket share: this machine's hard `ulimit -n` is 20,000 and cannot be raised without
root. A gateway worker holds one upstream socket per stream plus one client socket per HTTP stream,
so 10,000 HTTP streams would need ~20,050 descriptors; multiplexing part of the load (100 streams
per WebSocket) keeps one worker at 10,000 concurrent upstream streams within the limit.

`--compare` first runs the same HTTP streams through the bare pass-through of `make bench` (Granian
RSGI + aiohttp, one worker, no logic: `benches/baseline/passthrough.py`) and prints both columns, so
the gateway's cost reads against the cheapest Python proxy on the same machine, same run.

Not a timed test: it prints a table and exits non-zero on any error or unfinished stream. Bounded in
time (~2.5 min with the defaults; `--timeout` per target at most).
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
ROOT = Path(__file__).resolve().parents[2]
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


def machine_busy() -> tuple[int, int]:
    """(busy, total) jiffies over all cores since boot (/proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


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


class Target:
    """What the clients stream through: a running server and the worker process to watch."""

    def __init__(
        self, name: str, proc: subprocess.Popen[bytes], port: int, log: Path, client_args: list[str]
    ):
        self.name, self.proc, self.port, self.log, self.client_args = name, proc, port, log, client_args
        wait_port(port)
        time.sleep(1.0)
        kids = [p for p in descendants(proc.pid) if Path(f"/proc/{p}/cmdline").read_bytes()]
        self.worker = max(kids or [proc.pid], key=rss_mb)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def start_ensemble(work: Path, fake_addr: str, args: argparse.Namespace) -> Target:
    port = free_port()
    cfg = write_config(work, port, fake_addr, args.connect_timeout)
    env = {**os.environ, "ENSEMBLE_ENVIRONMENT": "development", "ENSEMBLE_LOOP_LAG_REPORT": "2"}
    key = subprocess.run(
        [str(BIN / "ensemble"), "keys", "create", "--name", "soak", *cfg],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    log = work / "gateway.log"
    proc = subprocess.Popen(
        [str(BIN / "ensemble"), "serve", *cfg],
        env=env,
        stdout=open(log, "wb"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
    )
    # --openai: the bare pass-through's request, which takes the same-format fast path.
    route = ["-path", "/v1/chat/completions", "-openai", "-usage"] if args.openai else []
    return Target("Ensemble", proc, port, log, ["-key", key, *route])


def start_passthrough(work: Path, fake_addr: str, usage: bool = False) -> Target:
    port = free_port()
    log = work / "passthrough.log"
    proc = subprocess.Popen(
        [
            *(str(BIN / "granian"), "--interface", "rsgi", "--loop", "uvloop", "--workers", "1"),
            *("--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"),
            # as `ensemble serve`: Granian's default admits only backlog/workers requests at once
            *("--backlog", "2048", "--backpressure", "50000", "benches.baseline.passthrough:app"),
        ],
        env={**os.environ, "PASSTHROUGH_UPSTREAM": f"http://{fake_addr}", "PYTHONPATH": str(ROOT)},
        stdout=open(log, "wb"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
    )
    return Target(
        "bare pass-through",
        proc,
        port,
        log,
        ["-key", "sk-soak", "-path", "/soak/chat/completions", "-openai", *(["-usage"] if usage else [])],
    )


def measure(
    target: Target, rig: Path, fake_pid: int, args: argparse.Namespace, http: int, ws: int
) -> dict[str, Any]:
    """Open `http` + `ws` streams through `target`, follow them to the end, return the figures."""
    total = http + ws
    baseline = rss_mb(target.worker)
    cpu0, fake_cpu0 = cpu_seconds(target.worker), cpu_seconds(fake_pid)
    busy0, all0 = machine_busy()
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(
        f"{target.name}: worker pid {target.worker}, baseline RSS {baseline:.1f} MB; {total:,} streams "
        f"({http:,} SSE + {ws:,} WebSocket), {args.chunks} tokens x {args.gap_ms:g} ms "
        f"(~{total * 1000 / args.gap_ms:,.0f} events/s when all are open)",
        flush=True,
    )
    clients = subprocess.Popen(
        [
            *(str(rig), "clients", "-addr", f"127.0.0.1:{target.port}", "-model", MODEL),
            *("-http", str(http), "-ws", str(ws), "-rate", str(args.rate), "-timeout", f"{args.timeout}s"),
            *target.client_args,
        ],
        stdout=subprocess.PIPE,
    )
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
    t0 = time.monotonic()
    peak_open, peak_rss, rss_at_peak = 0, baseline, baseline
    ramp_s: float | None = None
    try:
        while clients.poll() is None and time.monotonic() - t0 < args.timeout + 10:
            time.sleep(0.5)
            now_open, rss = int(status["open"]), rss_mb(target.worker)
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
    finally:
        if clients.poll() is None:
            clients.kill()
        clients.wait()
    reader.join(5)
    elapsed = time.monotonic() - t0
    children = resource.getrusage(resource.RUSAGE_CHILDREN)  # the clients: the only child reaped here
    busy1, all1 = machine_busy()
    done = int(status["done"])
    return {
        "total": total,
        "peak_open": peak_open,
        "ramp_s": ramp_s,
        "done": done,
        "errors": int(status["errors"]),
        "timed_out": not final or bool(final.get("timed_out")),
        "rss": (baseline, rss_at_peak, peak_rss),
        "per_stream_kb": (rss_at_peak - baseline) * 1024 / peak_open if peak_open else 0.0,
        "lags": [
            tuple(float(x) for x in m.groups())
            for m in re.finditer(
                r"loop lag p50=([\d.]+)ms p99=([\d.]+)ms max=([\d.]+)ms", target.log.read_text()
            )
        ],
        "duration_ms": final.get("duration_ms") or {},
        "max_gap_ms": final.get("max_gap_ms") or {},
        "cpu": cpu_seconds(target.worker) - cpu0,
        "fake_cpu": cpu_seconds(fake_pid) - fake_cpu0,
        "clients_cpu": children.ru_utime + children.ru_stime - children0.ru_utime - children0.ru_stime,
        "machine_busy": (busy1 - busy0) / max(all1 - all0, 1),
        "elapsed": elapsed,
        # tokens + the role, finish and usage chunks of each answer
        "events": done * (args.chunks + 3),
    }


def rows(r: dict[str, Any], args: argparse.Namespace) -> dict[str, str]:
    out = {
        "concurrent streams (peak open)": f"{r['peak_open']:,} of {r['total']:,}",
        "time until all were open": f"{r['ramp_s']:.1f} s" if r["ramp_s"] else "never all at once",
        "streams completed": f"{r['done']:,}",
        "errors": f"{r['errors']}{' (timed out)' if r['timed_out'] else ''}",
        "worker RSS baseline / at peak / max": "{:.0f} / {:.0f} / {:.0f} MB".format(*r["rss"]),
        "memory per open stream": f"{r['per_stream_kb']:.1f} KB",
    }
    lags = r["lags"]
    if lags:
        out["event-loop lag p50 (median of 2 s windows)"] = (
            f"{sorted(w[0] for w in lags)[len(lags) // 2]:.1f} ms"
        )
        out["event-loop lag p99 (worst 2 s window)"] = f"{max(w[1] for w in lags):.1f} ms"
        out["event-loop lag max"] = f"{max(w[2] for w in lags):.1f} ms"
    dur, gaps = r["duration_ms"], r["max_gap_ms"]
    if dur:
        nominal_s = args.chunks * args.gap_ms / 1000
        out[f"stream duration p50 / p99 / max (nominal {nominal_s:g} s)"] = (
            f"{dur['p50'] / 1000:.2f} / {dur['p99'] / 1000:.2f} / {dur['max'] / 1000:.2f} s"
        )
        out[f"longest wait between reads per stream, p50 / p99 / max (nominal {args.gap_ms:g} ms)"] = (
            f"{gaps['p50']:.0f} / {gaps['p99']:.0f} / {gaps['max']:.0f} ms"
        )
    out["worker CPU"] = f"{r['cpu']:.1f} s ({100 * r['cpu'] / r['elapsed']:.0f}% of one core)"
    if r["events"]:
        out["worker CPU per upstream event (all threads, opening included)"] = (
            f"{r['cpu'] / r['events'] * 1e6:.1f} µs"
        )
    out["rig upstream CPU"] = f"{r['fake_cpu']:.1f} s ({100 * r['fake_cpu'] / r['elapsed']:.0f}% of one core)"
    out["rig clients CPU"] = (
        f"{r['clients_cpu']:.1f} s ({100 * r['clients_cpu'] / r['elapsed']:.0f}% of one core)"
    )
    out["machine busy (both cores, whole run)"] = f"{100 * r['machine_busy']:.0f}%"
    out["wall time"] = f"{r['elapsed']:.1f} s"
    return out


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
    ap.add_argument(
        "--timeout", type=float, default=300.0, help="give up after this many seconds (per target)"
    )
    ap.add_argument("--show-lag", action="store_true", help="print each 2 s window's lag and GC line")
    ap.add_argument(
        "--openai",
        action="store_true",
        help="Ensemble's HTTP streams as OpenAI chat requests with the usage chunk (the same-format fast "
        "path), the same request the bare pass-through gets (default: the native /api/v1/stream)",
    )
    ap.add_argument(
        "--compare",
        action="store_true",
        help="first run the same streams through the bare pass-through (HTTP only: needs --ws 0)",
    )
    args = ap.parse_args()
    if args.compare and args.ws:
        ap.error(
            "--compare runs HTTP streams only (the bare pass-through has no WebSocket route): add --ws 0"
        )
    raise_nofile()
    work = Path(tempfile.mkdtemp(prefix="ensemble-soak-"))
    try:
        results = run_targets(work, args)
        tables = {name: rows(r, args) for name, r in results.items()}
        names = list(tables)
        print()
        print("| metric | " + " | ".join(names) + " |")
        print("|---|" + "---|" * len(names))
        for metric in tables[names[-1]]:
            print(f"| {metric} | " + " | ".join(tables[n].get(metric, "—") for n in names) + " |")
        failed = [n for n, r in results.items() if r["errors"] or r["timed_out"] or r["done"] != r["total"]]
        if args.show_lag:
            print("\nEnsemble, per 2 s window (gateway log):")
            for line in (work / "gateway.log").read_text().splitlines():
                if "loop lag" in line:
                    print("  " + orjson.loads(line)["msg"])
        if failed:
            for name in ("gateway.log", "passthrough.log", "fake.log"):
                if (work / name).exists():
                    lines = [
                        x
                        for x in (work / name).read_text(errors="replace").splitlines()
                        if "loop lag" not in x
                    ]
                    print(f"\n--- last lines of {name} ---", *lines[-15:], sep="\n")
        return 1 if failed else 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_targets(work: Path, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The rig's upstream, then (with --compare) the bare pass-through, then Ensemble, one at a time."""
    results: dict[str, dict[str, Any]] = {}
    rig = build_rig(work)
    fake = subprocess.Popen(
        [str(rig), "fake", "-chunks", str(args.chunks), "-gap", f"{args.gap_ms}ms"],
        stdout=subprocess.PIPE,
        stderr=open(work / "fake.log", "wb"),  # noqa: SIM115
    )
    try:
        assert fake.stdout is not None
        fake_addr = fake.stdout.readline().decode().split()[-1]
        if args.compare:
            base = start_passthrough(work, fake_addr, usage=args.openai)
            try:
                results[base.name] = measure(base, rig, fake.pid, args, args.http, 0)
            finally:
                base.stop()
        gw = start_ensemble(work, fake_addr, args)
        try:
            results[gw.name] = measure(gw, rig, fake.pid, args, args.http, args.ws)
        finally:
            gw.stop()
    finally:
        fake.send_signal(signal.SIGTERM)
        fake.wait(10)
    return results


if __name__ == "__main__":
    sys.exit(main())
