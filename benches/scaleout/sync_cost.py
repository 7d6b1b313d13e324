"""What shared rate limits cost: requests/s of ONE instance with and without Redis configured.

    .venv/bin/python benches/scaleout/sync_cost.py [--seconds 5] [--connections 32] [--rounds 2]

Starts a real redis-server on a free port and one `ensemble serve` (mock provider, no latency)
per mode, with a key limited to 10,000,000 requests and tokens per minute, so every request goes
through admission and, with Redis, through the leased quota (ratelimit/lease.py) while the
background sync pushes usage and refills leases every `sync_interval` (1 s). Load comes from
`wrk` (apt-get install wrk) on loopback; each run is bounded by --seconds. Modes alternate for
--rounds rounds so a noisy neighbour hurts both alike; the best round of each is reported.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from support.ensemble import Ensemble  # noqa: E402
from support.shared import RedisServer  # noqa: E402

BODY = '{"model": "mock-1", "messages": [{"role": "user", "content": "benchmark the sync"}]}'


def wrk(url: str, key: str, seconds: int, connections: int) -> float:
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = '{BODY}'\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {key}"\n'
    )
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(script), f"{url}/api/v1/generate"],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=True,
    ).stdout
    script.unlink()
    if "Non-2xx" in out:
        raise SystemExit(f"non-2xx answers during the run:\n{out}")
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert match, out
    return float(match.group(1))


def run_mode(redis: RedisServer | None, seconds: int, connections: int) -> float:
    config: dict[str, object] = {"logging": {"level": "warning", "format": "json"}}
    if redis is not None:
        config["redis"] = {"address": redis.address, "namespace": "bench"}
    node = Ensemble(Path(tempfile.mkdtemp(prefix="bench-scaleout-")), config=config)
    try:
        key = node.create_key("bench", "--rpm", "10000000", "--tpm", "10000000")
        node.wait_for_key(key)
        wrk(node.url, key, 1, connections)  # warm-up
        return wrk(node.url, key, seconds, connections)
    finally:
        node.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    redis = RedisServer()
    results: dict[str, list[float]] = {"local (no Redis)": [], "Redis sync": []}
    try:
        for _ in range(args.rounds):
            results["local (no Redis)"].append(run_mode(None, args.seconds, args.connections))
            results["Redis sync"].append(run_mode(redis, args.seconds, args.connections))
    finally:
        redis.stop()
    base = max(results["local (no Redis)"])
    print(
        f"one instance, 1 worker, mock provider, wrk -c{args.connections} -d{args.seconds}s, best of {args.rounds}"
    )
    for mode, values in results.items():
        best = max(values)
        runs = ", ".join(f"{v:,.0f}" for v in values)
        print(f"  {mode:<18} {best:>9,.0f} req/s  ({best / base - 1:+.1%})  runs: {runs}")


if __name__ == "__main__":
    main()
