"""The pipeline's own cost, in process: `App.handle` on a fake RSGI protocol, mock provider, no network.

What is left when the server socket, Granian and the upstream are taken away: auth, parsing,
validation, routing, admission, the provider adapter, pricing, recording and rendering. Prints
µs per request for JSON and SSE; `--profile` adds the top cProfile entries. `--upstream` puts the
fake upstream (a subprocess, 20 chunks) behind an OpenAI-type provider instead of the mock, so the
upstream client and the stream path (the same-format fast path for SSE) are measured too (the
upstream's own CPU is not counted).

    python benches/pipeline/bench_inprocess.py [--requests 20000] [--profile] [--upstream] [--rounds N]

`--rounds N` measures the cases N times in turn (interleaved, so a busy machine weighs on every
case alike) and prints each case's median and the Responses rows against the chat rows.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import uvloop
import yaml

from ensemble.config_loader import load_config
from ensemble.server.app import App

BIN = Path(sys.executable).parent
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from rsgi_fakes import Proto, Scope  # noqa: E402


def openai_provider(upstream: str) -> dict[str, Any]:
    return {
        "name": "openai",
        "type": "openai",
        "base_url": upstream,
        "endpoints": [{"id": "fake", "api_key": "sk-fake", "rpm_limit": 10**9, "tpm_limit": 10**12}],
        "models": [{"name": "mock-1", "upstream": "mock-1", "pricing": {"input": 1.0, "output": 2.0}}],
    }


def start_fake() -> tuple[subprocess.Popen[bytes], str]:
    """The fake upstream with provider rate limits lifted and recording off (as `make bench`)."""
    import socket

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "ensemble.fake_upstream", "--port", str(port), "--chunks", "20"]
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            httpx.put(
                url + "/_fake/config",
                json={"ratelimit_requests": 10**9, "ratelimit_tokens": 10**12, "record": False},
            ).raise_for_status()
            return proc, url
        except httpx.TransportError:
            time.sleep(0.05)
    raise RuntimeError("the fake upstream did not start")


def setup(tmp: Path, upstream: str | None = None) -> tuple[App, str]:
    (tmp / "providers").mkdir()
    (tmp / "ensemble.yaml").write_text(
        yaml.safe_dump(
            {
                "database": {"path": str(tmp / "bench.db")},
                "rate_limit": {"default_rpm": 100_000_000, "default_tpm": 100_000_000_000},
                "logging": {"level": "warning"},
            }
        )
    )
    provider = {
        "name": "mock",
        "type": "mock",
        "mock": {"chunks": 20},
        "models": [{"name": "mock-1", "pricing": {"input": 1.0, "output": 2.0}}],
    }
    (tmp / "providers" / "mock.yaml").write_text(
        yaml.safe_dump(openai_provider(upstream) if upstream else provider)
    )
    config = str(tmp / "ensemble.yaml")
    key = subprocess.run(
        [str(BIN / "ensemble"), "keys", "create", "--name", "b", "--config", config],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return App(load_config(config)), key


async def drive(app: App, key: str, path: str, body: bytes, n: int) -> float:
    headers = {
        "authorization": f"Bearer {key}",
        "content-type": "application/json",
        "content-length": str(len(body)),
    }
    start = time.process_time()  # CPU time: stays meaningful on a busy machine
    for _ in range(n):
        proto = Proto(body)
        await app.handle(Scope(path, headers), proto)  # type: ignore[arg-type]
        assert proto.status == 200, proto.status
    return (time.process_time() - start) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--upstream", action="store_true", help="the fake upstream instead of the mock provider")
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    loop = uvloop.new_event_loop()
    fake, upstream = start_fake() if args.upstream else (None, None)
    with tempfile.TemporaryDirectory() as tmp:
        app, key = setup(Path(tmp), upstream)
        app.__rsgi_init__(loop)
        msg: dict[str, Any] = {
            "model": "mock-1",
            "messages": [{"role": "user", "content": "Say hello, benchmark."}],
        }
        responses: dict[str, Any] = {"model": "mock-1", "input": msg["messages"][0]["content"]}
        cases = [
            ("json", "/v1/chat/completions", orjson.dumps(msg)),
            ("sse", "/v1/chat/completions", orjson.dumps({**msg, "stream": True})),
            (
                "sse+usage",
                "/v1/chat/completions",
                orjson.dumps({**msg, "stream": True, "stream_options": {"include_usage": True}}),
            ),
            ("native json", "/api/v1/generate", orjson.dumps(msg)),
            ("responses json", "/v1/responses", orjson.dumps(responses)),
            ("responses sse", "/v1/responses", orjson.dumps({**responses, "stream": True})),
        ]
        runs: dict[str, list[float]] = {name: [] for name, _, _ in cases}
        for _ in range(args.rounds):
            for name, path, body in cases:
                loop.run_until_complete(drive(app, key, path, body, 500))  # warm up
                if args.profile:
                    prof = cProfile.Profile()
                    prof.enable()
                us = loop.run_until_complete(drive(app, key, path, body, args.requests))
                runs[name].append(us)
                print(f"{name:14s} {us:7.1f} CPU µs/request (mock provider, 20 chunks for SSE)")
                if args.profile:
                    prof.disable()
                    pstats.Stats(prof).sort_stats("tottime").print_stats(18)
        app.__rsgi_del__(loop)
    if args.rounds > 1:
        median = {name: statistics.median(v) for name, v in runs.items()}
        for fmt in ("json", "sse"):
            r, c = median[f"responses {fmt}"], median[fmt]
            print(
                f"median of {args.rounds}: responses {fmt} {r:.1f} µs vs chat {c:.1f} µs ({(r / c - 1) * 100:+.1f}%)"
            )
    if fake is not None:
        fake.terminate()
        fake.wait()


if __name__ == "__main__":
    main()
