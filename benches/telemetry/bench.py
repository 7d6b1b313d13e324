"""What telemetry costs per request: the full in-process pipeline with metrics/tracing off and on.

Drives Ensemble's RSGI app directly (no sockets, so network noise does not hide microseconds) with
`POST /api/v1/generate` on the mock provider (no latency), sequentially on one uvloop loop, in a
fresh process per mode:

  off          telemetry.prometheus: false, no otlp_endpoint (no tracer is ever loaded)
  prometheus   telemetry.prometheus: true (the default), no otlp_endpoint
  otlp         prometheus and tracing, spans batched and exported over OTLP/HTTP to a local sink
               process (the SDK's export thread runs in the measured process, as in production)

Reports wall time and process CPU time per request (median of the rounds).

    python benches/telemetry/bench.py [--requests 20000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from rsgi_fakes import Proto, Scope

MODES = ("off", "prometheus", "otlp")
BODY = json.dumps(
    {"model": "mock-1", "messages": [{"role": "user", "content": "Hello there, gateway"}]}
).encode()


def scope(key: str) -> Scope:
    return Scope(
        "/api/v1/generate",
        {
            "authorization": f"Bearer {key}",
            "content-type": "application/json",
            "content-length": str(len(BODY)),
        },
    )


def write_config(directory: Path, mode: str, sink: str) -> Path:
    (directory / "providers").mkdir(parents=True, exist_ok=True)
    telemetry: dict[str, Any] = {"prometheus": mode != "off", "otlp_endpoint": sink if mode == "otlp" else ""}
    main = {
        "database": {"path": str(directory / "ensemble.db")},
        "logging": {"level": "warning", "request_log": True},
        "telemetry": telemetry,
    }
    (directory / "ensemble.yaml").write_text(yaml.safe_dump(main))
    mock = {
        "name": "mock",
        "type": "mock",
        "mock": {"latency": "0ms", "chunks": 4, "chunk_gap": "0ms"},
        "endpoints": [{"id": "mock-local"}],
        "models": [{"name": "mock-1", "pricing": {"input": 1.0, "output": 2.0}}],
    }
    (directory / "providers" / "mock.yaml").write_text(yaml.safe_dump(mock))
    return directory / "ensemble.yaml"


def run_mode(mode: str, requests: int, rounds: int, sink: str) -> dict[str, Any]:
    import uvloop

    from ensemble.config_loader import load_config
    from ensemble.server.app import App
    from ensemble.storage import database, keys

    directory = Path(tempfile.mkdtemp(prefix=f"ensemble-bench-{mode}-"))
    config = load_config(write_config(directory, mode, sink))
    conn = database.connect_sync(config.database.path)
    database.migrate(conn)
    key, _ = keys.create_key(conn, name="bench")
    conn.close()
    app = App(config)
    request_scope = scope(key)

    async def main() -> list[tuple[float, float]]:
        await app.runtime.startup()
        out = []
        try:
            for _ in range(500):  # warm up
                await app.handle(request_scope, Proto(BODY))  # type: ignore[arg-type]
            for _ in range(rounds):
                w0, c0 = time.perf_counter(), time.process_time()
                for _ in range(requests):
                    proto = Proto(BODY)
                    await app.handle(request_scope, proto)  # type: ignore[arg-type]
                    assert proto.status == 200, proto.status
                out.append(((time.perf_counter() - w0) / requests, (time.process_time() - c0) / requests))
        finally:
            await app.runtime.shutdown()
        return out

    results = uvloop.run(main())
    return {
        "mode": mode,
        "wall_us": statistics.median(w for w, _ in results) * 1e6,
        "cpu_us": statistics.median(c for _, c in results) * 1e6,
        # Our tracing module or the OpenTelemetry trace SDK: where any span would come from. (The
        # OpenTelemetry API and metrics SDK may be imported by redis-py's optional instrumentation.)
        "tracer_loaded": "ensemble.telemetry.tracing" in sys.modules
        or "opentelemetry.sdk.trace" in sys.modules,
    }


def serve_sink(port_file: str) -> None:
    """An OTLP/HTTP endpoint that accepts and discards (another process: not in the measurement)."""

    class Sink(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", 0)))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    Path(port_file).write_text(str(server.server_address[1]))
    server.serve_forever()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--mode", choices=MODES)
    parser.add_argument("--sink", default="")
    parser.add_argument("--serve-sink")
    args = parser.parse_args()
    if args.serve_sink:
        serve_sink(args.serve_sink)
        return 0
    if args.mode:
        print(json.dumps(run_mode(args.mode, args.requests, args.rounds, args.sink)))
        return 0

    port_file = Path(tempfile.mkdtemp()) / "port"
    sink = subprocess.Popen([sys.executable, __file__, "--serve-sink", str(port_file)])
    try:
        while not port_file.exists() or not port_file.read_text():
            time.sleep(0.05)
        sink_url = f"http://127.0.0.1:{port_file.read_text()}"
        with socket.create_connection(("127.0.0.1", int(port_file.read_text())), timeout=5):
            pass
        rows = []
        for mode in MODES:
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--mode",
                    mode,
                    "--requests",
                    str(args.requests),
                    "--rounds",
                    str(args.rounds),
                    "--sink",
                    sink_url,
                ],
                capture_output=True,
                text=True,
                check=True,
                env={k: v for k, v in os.environ.items() if k.lower() != "prometheus_multiproc_dir"},
            )
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    finally:
        sink.terminate()
        sink.wait()
    base = rows[0]
    print(f"{'mode':<12}{'wall µs/req':>14}{'cpu µs/req':>14}{'Δ cpu vs off':>16}  tracer loaded")
    for row in rows:
        delta = row["cpu_us"] - base["cpu_us"]
        print(
            f"{row['mode']:<12}{row['wall_us']:>14.1f}{row['cpu_us']:>14.1f}{delta:>+16.1f}  {row['tracer_loaded']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
