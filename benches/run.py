"""`make bench`: Ensemble's throughput, latency, overhead and memory against a bare pass-through.

Starts the fake upstream (no latency) and three front ends on the same load:
  direct      wrk → fake upstream (the floor every proxy adds to)
  baseline    wrk → bare Granian RSGI + aiohttp pass-through → fake upstream
  ensemble    wrk → `ensemble serve` with the full pipeline on (auth, key rate limits with high
              limits, validation, routing, cost, request log) → fake upstream
for JSON and SSE (20 chunks) chat completions, at concurrency 1 and 64, with 1 (and 2) workers.
The same Ensemble is also measured on the OpenAI Responses route (`ensemble-responses`: POST
/v1/responses translated to the same chat-completions upstream, JSON and SSE at the top
concurrency), each round right after the chat cell it is compared with; its CPU per request
against that cell is printed per round (with the load average) and for the median round.
The proxy is pinned to core 0, the fake upstream and wrk to core 1 (2-core machine: with 2 workers
the proxy takes both cores and shares them with the load generator and the upstream).

Baseline and Ensemble run side by side (idle while the other is measured) and every cell is
measured baseline, then Ensemble, for `--rounds` interleaved rounds: a machine shared with other
work drifts between rounds, not within a pair, so the ratios ("vs baseline") are per round, and the
table shows each cell's median round. Then the HTTP/2 upstream section (benches/upstream/
bench_streams.py: 2,000 concurrent streams to one host, connections and CPU per event, HTTP/1.1 vs
HTTP/2), unless `--no-upstream`.

    python benches/run.py [--duration 10] [--workers 1,2] [--rounds 3] [--quick] [--markdown]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
UPSTREAM_KEY = "sk-bench-upstream-key-0000000000"
MODEL = "gpt-4o-mini"
PATH = "/v1/chat/completions"
RESPONSES_PATH = "/v1/responses"
MESSAGES = [{"role": "user", "content": "Say hello to the benchmark, please."}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def taskset(cores: str) -> list[str]:
    return ["taskset", "-c", cores] if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else []


class Proc:
    def __init__(self, argv: list[str], env: dict[str, str] | None = None, log: Path | None = None) -> None:
        self.log = log or Path(tempfile.mkstemp(prefix="bench-", suffix=".log")[1])
        with self.log.open("wb") as out:
            self.p = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                cwd=ROOT,
                start_new_session=True,
            )

    def wait_http(self, url: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.p.poll() is not None:
                raise RuntimeError(f"process exited:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(url, timeout=1).status_code < 500:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{url} not ready:\n{self.log.read_text()[-3000:]}")

    def rss_mb(self) -> float:
        """RSS of the process tree's workers (children if any, else the process itself)."""
        pids = children(self.p.pid) or [self.p.pid]
        total = 0
        for pid in pids:
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except OSError:
                pass
        return total / 1024

    def cpu_seconds(self) -> float:
        """User + system CPU time consumed so far by the process and its workers."""
        total = 0
        for pid in [self.p.pid, *children(self.p.pid)]:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])  # utime, stime in clock ticks
        return total / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGTERM)
            try:
                self.p.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, signal.SIGKILL)


def children(pid: int) -> list[int]:
    out = []
    for task in Path("/proc").iterdir():
        if task.name.isdigit():
            try:
                stat = (task / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(task.name))
    return out


@dataclass
class Result:
    target: str
    fmt: str
    concurrency: int
    workers: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    rss_mb: float | None = None
    cpu_us: float | None = None  # the proxy's own CPU time per request: robust on a busy machine
    completed: int = 0  # requests wrk saw answered


_UNIT = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    assert m, text
    return float(m.group(1)) * _UNIT[m.group(2)]


def wrk(
    url: str, body: bytes, auth: str, concurrency: int, duration: float
) -> tuple[float, float, float, int]:
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    lua_body = body.decode().replace("\\", "\\\\").replace('"', '\\"')
    script.write_text(
        'wrk.method = "POST"\n'
        f'wrk.body = "{lua_body}"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {auth}"\n'
    )
    argv = [
        *taskset("1"),
        "wrk",
        "-t1",
        f"-c{concurrency}",
        f"-d{max(1, round(duration))}s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
    script.unlink()
    out = done.stdout
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if found is None:
        raise RuntimeError(f"wrk failed on {url}:\n{out}\n{done.stderr}")
    rps = float(found.group(1))
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = 0
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if m:
        errors += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(x) for x in m.groups())
    return rps, p50, p99, errors, total


def body(stream: bool) -> bytes:
    import orjson

    req: dict[str, object] = {"model": MODEL, "messages": MESSAGES, "max_tokens": 64}
    if stream:
        req["stream"] = True
        req["stream_options"] = {"include_usage": True}
    return orjson.dumps(req)


def responses_body(stream: bool) -> bytes:
    import orjson

    req: dict[str, object] = {"model": MODEL, "input": MESSAGES[0]["content"], "max_output_tokens": 64}
    if stream:
        req["stream"] = True
    return orjson.dumps(req)


def measure(
    target: str,
    proc: Proc,
    url: str,
    key: str,
    workers: int,
    fmt: str,
    c: int,
    duration: float,
    path: str = PATH,
    make_body: Callable[[bool], bytes] = body,
) -> Result:
    cpu = proc.cpu_seconds()
    rps, p50, p99, err, n = wrk(url + path, make_body(fmt == "sse"), key, c, duration)
    cpu_us = (proc.cpu_seconds() - cpu) / max(n, 1) * 1e6
    return Result(target, fmt, c, workers, rps, p50, p99, err, proc.rss_mb(), cpu_us, n)


def median_rounds(pairs: list[tuple[Result, Result]]) -> tuple[Result, Result]:
    """The (baseline, ensemble) pair of the round whose req/s ratio is the median one; errors and
    requests of every round are counted."""
    ranked = sorted(pairs, key=lambda p: p[1].rps / max(p[0].rps, 1e-9))
    base, ens = ranked[len(ranked) // 2]
    base.errors, ens.errors = sum(p[0].errors for p in pairs), sum(p[1].errors for p in pairs)
    ens.completed = sum(p[1].completed for p in pairs)
    return base, ens


def start_ensemble(upstream: str, workers: int, workdir: Path) -> tuple[Proc, str, str]:
    port = free_port()
    (workdir / "providers").mkdir(parents=True, exist_ok=True)
    (workdir / "ensemble.yaml").write_text(
        yaml.safe_dump(
            {
                "server": {"host": "127.0.0.1", "port": port, "workers": workers},
                "database": {"path": str(workdir / "data" / "bench.db")},
                "rate_limit": {"default_rpm": 100_000_000, "default_tpm": 100_000_000_000},
                "logging": {"level": "warning", "request_log": True},
            }
        )
    )
    (workdir / "providers" / "openai.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "openai",
                "type": "openai",
                "base_url": upstream,
                "endpoints": [
                    {
                        "id": "bench-upstream",
                        "api_key": UPSTREAM_KEY,
                        "rpm_limit": 100_000_000,
                        "tpm_limit": 100_000_000_000,
                    }
                ],
                "models": [
                    {
                        "name": MODEL,
                        "max_output_tokens": 16384,
                        "pricing": {"input": 0.15, "output": 0.6, "cache_read": 0.075},
                    }
                ],
            }
        )
    )
    config = str(workdir / "ensemble.yaml")
    key = subprocess.run(
        [
            str(BIN / "ensemble"),
            "keys",
            "create",
            "--name",
            "bench",
            "--config",
            config,
            "--rpm",
            "100000000",
            "--tpm",
            "100000000000",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout.strip()
    cores = "0" if workers == 1 else "0,1"
    proc = Proc([*taskset(cores), str(BIN / "ensemble"), "serve", "--config", config])
    url = f"http://127.0.0.1:{port}"
    proc.wait_http(url + "/health")
    return proc, url, key


def start_baseline(upstream: str, workers: int) -> tuple[Proc, str]:
    port = free_port()
    cores = "0" if workers == 1 else "0,1"
    proc = Proc(
        [
            *taskset(cores),
            str(BIN / "granian"),
            "--interface",
            "rsgi",
            "--loop",
            "uvloop",
            "--workers",
            str(workers),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "benches.baseline.passthrough:app",
        ],
        env={"PASSTHROUGH_UPSTREAM": upstream, "PYTHONPATH": str(ROOT)},
    )
    url = f"http://127.0.0.1:{port}"
    proc.wait_http(url + "/")
    return proc, url


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per measurement (default 10)")
    ap.add_argument("--workers", default="1,2", help="worker counts for the proxies (default 1,2)")
    ap.add_argument("--concurrency", default="1,64", help="connection counts (default 1,64)")
    ap.add_argument("--quick", action="store_true", help="3 s per measurement, 1 worker, 1 round")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds per cell (default 3)")
    ap.add_argument("--no-upstream", action="store_true", help="skip the HTTP/2 upstream section")
    ap.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    ap.add_argument(
        "--rss-requests",
        type=int,
        default=0,
        metavar="N",
        help="only the memory soak: N JSON requests (c64) through 1 worker, RSS sampled as it goes",
    )
    args = ap.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed (apt-get install wrk)")
    duration = 3.0 if args.quick else args.duration
    worker_counts = [1] if args.quick else [int(w) for w in args.workers.split(",")]
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    rounds = 1 if args.quick else max(1, args.rounds)

    if args.rss_requests:
        rss_soak(args.rss_requests)
        return
    fake, upstream = start_fake()
    results: list[Result] = []
    responses_rows: list[tuple[Result, Result, float]] = []  # (chat, Responses, load) per round
    try:
        path = PATH
        for fmt in ("json", "sse"):
            for c in concurrencies:
                rps, p50, p99, err, _ = wrk(upstream + path, body(fmt == "sse"), UPSTREAM_KEY, c, duration)
                results.append(Result("direct", fmt, c, 1, rps, p50, p99, err))
        for workers in worker_counts:
            with tempfile.TemporaryDirectory() as tmp:
                base, base_url = start_baseline(upstream, workers)
                ens, ens_url, key = start_ensemble(upstream, workers, Path(tmp))
                completed = 0
                try:
                    *_, completed = wrk(ens_url + PATH, body(False), key, 8, 1)  # warm up: pools, first calls
                    wrk(base_url + PATH, body(False), UPSTREAM_KEY, 8, 1)
                    top = max(concurrencies)
                    for fmt in ("json", "sse"):
                        chat_vs_responses: list[tuple[Result, Result, float]] = []
                        for c in concurrencies:
                            pairs = []
                            for _ in range(rounds):
                                b = measure(
                                    "baseline", base, base_url, UPSTREAM_KEY, workers, fmt, c, duration
                                )
                                e = measure("ensemble", ens, ens_url, key, workers, fmt, c, duration)
                                pairs.append((b, e))
                                if (
                                    c == top
                                ):  # the Responses route right after the chat cell it is compared with
                                    r = measure(
                                        "ensemble-responses",
                                        ens,
                                        ens_url,
                                        key,
                                        workers,
                                        fmt,
                                        c,
                                        duration,
                                        RESPONSES_PATH,
                                        responses_body,
                                    )
                                    chat_vs_responses.append((e, r, os.getloadavg()[0]))
                                    completed += r.completed
                            b, e = median_rounds(pairs)
                            results += [b, e]
                            completed += e.completed  # every round's (median_rounds sums them)
                        responses_rows += chat_vs_responses
                finally:
                    ens.stop()
                    base.stop()
                check_request_log(Path(tmp), completed)
    finally:
        fake.stop()
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    results += [median_pair(responses_rows, fmt, w)[1] for w in worker_counts for fmt in ("json", "sse")]
    print_table(results, markdown=args.markdown)
    print_responses_cpu(responses_rows, worker_counts)
    if not args.no_upstream:
        upstream_section(quick=args.quick)


def median_pair(
    pairs: list[tuple[Result, Result, float]], fmt: str, workers: int
) -> tuple[Result, Result, float]:
    """The (chat, Responses) pair of this format and worker count with the median CPU ratio."""
    mine = sorted(
        (p for p in pairs if p[1].fmt == fmt and p[1].workers == workers),
        key=lambda p: p[1].cpu_us / max(p[0].cpu_us, 1e-9),
    )
    return mine[len(mine) // 2]


def print_responses_cpu(pairs: list[tuple[Result, Result, float]], worker_counts: list[int]) -> None:
    """The Responses route's CPU per request against the chat cell measured just before it (same
    server, load and format), each round with the 1-minute load average, then the median round."""
    for c, r, load in pairs:
        print(
            f"responses vs chat, {r.fmt} c{r.concurrency} w{r.workers}: CPU/request "
            f"{r.cpu_us:.0f} µs vs {c.cpu_us:.0f} µs ({(r.cpu_us / max(c.cpu_us, 1e-9) - 1) * 100:+.1f}%), "
            f"load {load:.1f}"
        )
    for workers in worker_counts:
        for fmt in ("json", "sse"):
            c, r, _ = median_pair(pairs, fmt, workers)
            print(
                f"responses vs chat, {fmt} w{workers}, median round: "
                f"{(r.cpu_us / max(c.cpu_us, 1e-9) - 1) * 100:+.1f}%"
            )


def upstream_section(quick: bool) -> None:
    """The HTTP/2 pool's numbers beside the table (benches/upstream/, docs/upstream.md)."""
    print("\nUpstream pool: 2,000 concurrent streams to one host, HTTP/1.1 vs HTTP/2", flush=True)
    argv = [sys.executable, str(ROOT / "benches" / "upstream" / "bench_streams.py"), "--streams", "2000"]
    argv += ["--events", "20", "--rounds", "1"] if quick else ["--rounds", "3"]
    subprocess.run(argv, cwd=ROOT, check=True, timeout=900)


def start_fake() -> tuple[Proc, str]:
    port = free_port()
    upstream = f"http://127.0.0.1:{port}"
    fake = Proc(
        [
            *taskset("1"),
            sys.executable,
            "-m",
            "ensemble.fake_upstream",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--chunks",
            "20",
        ]
    )
    fake.wait_http(upstream + "/_fake/health")
    # The fake announces a provider-like rate limit in its headers, which Ensemble obeys: lift it,
    # and stop recording requests, so a long run measures the proxy and nothing else.
    httpx.put(
        upstream + "/_fake/config",
        json={
            "endpoint": "default",
            "ratelimit_requests": 10**9,
            "ratelimit_tokens": 10**12,
            "record": False,
        },
    ).raise_for_status()
    return fake, upstream


def rss_soak(total: int) -> None:
    """RSS of one worker while `total` requests go through: it must level off, not grow."""
    fake, upstream = start_fake()
    samples: list[tuple[int, float]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            ens, url, key = start_ensemble(upstream, 1, Path(tmp))
            try:
                done = 0
                while done < total:
                    *_, errors, n = wrk(url + PATH, body(False), key, 64, 10)
                    if errors:
                        raise RuntimeError(f"{errors} errors during the soak")
                    done += n
                    samples.append((done, ens.rss_mb()))
                    print(f"{done:>10,} requests  RSS {samples[-1][1]:6.1f} MB", flush=True)
            finally:
                ens.stop()
            check_request_log(Path(tmp), done)
    finally:
        fake.stop()
    half = next(rss for n, rss in samples if n >= total / 2)
    print(
        f"RSS at half: {half:.1f} MB, at end: {samples[-1][1]:.1f} MB, "
        f"growth over the last half: {samples[-1][1] - half:+.1f} MB, peak {max(r for _, r in samples):.1f} MB"
    )


def check_request_log(workdir: Path, completed: int) -> None:
    """Every answered request left its row (the log drops the oldest records when its writer falls
    behind: a fast run that lost rows would be measuring less work)."""
    import sqlite3

    with sqlite3.connect(workdir / "data" / "bench.db") as db:
        (rows,) = db.execute("SELECT count(*) FROM request_log").fetchone()
    print(f"request log: {rows:,} rows for {completed:,} requests wrk saw answered", flush=True)
    if rows < completed:
        raise RuntimeError(f"the request log lost {completed - rows:,} rows")


def print_table(results: list[Result], markdown: bool) -> None:
    direct = {(r.fmt, r.concurrency): r for r in results if r.target == "direct"}
    base = {(r.fmt, r.concurrency, r.workers): r for r in results if r.target == "baseline"}
    header = [
        "target",
        "fmt",
        "conc",
        "workers",
        "req/s",
        "p50 ms",
        "p99 ms",
        "+p50 ms",
        "+p99 ms",
        "req/s vs baseline",
        "CPU µs/req",
        "CPU vs baseline",
        "RSS MB",
        "errors",
    ]
    rows = []
    for r in results:
        d = direct[(r.fmt, r.concurrency)]
        b = base.get((r.fmt, r.concurrency, r.workers))
        ratio = f"{r.rps / b.rps:.2f}" if b and r.target == "ensemble" else ""
        rows.append(
            [
                r.target,
                r.fmt,
                str(r.concurrency),
                str(r.workers),
                f"{r.rps:,.0f}",
                f"{r.p50_ms:.3f}",
                f"{r.p99_ms:.3f}",
                "" if r.target == "direct" else f"{r.p50_ms - d.p50_ms:+.3f}",
                "" if r.target == "direct" else f"{r.p99_ms - d.p99_ms:+.3f}",
                ratio,
                "" if r.cpu_us is None else f"{r.cpu_us:.0f}",
                f"{r.cpu_us / b.cpu_us:.2f}"
                if b and b.cpu_us and r.cpu_us and r.target == "ensemble"
                else "",
                "" if r.rss_mb is None else f"{r.rss_mb:.0f}",
                str(r.errors),
            ]
        )
    if markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for row in rows:
            print("| " + " | ".join(row) + " |")
    else:
        widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
        print("  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True)))
        for row in rows:
            print("  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)))


if __name__ == "__main__":
    main()
