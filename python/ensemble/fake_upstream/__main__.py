"""``python -m ensemble.fake_upstream --host 127.0.0.1 --port P [--workers 1] [--latency-ms 0]
[--chunks 20] [--chunk-gap-ms 0]``: serve the fake upstream with Granian (RSGI, uvloop).

Prints ``fake upstream listening on http://H:P`` on stdout once ``/_fake/health`` answers.
"""

from __future__ import annotations

import argparse
import http.client
import os
import sys
import threading
import time

import orjson


def _announce_when_ready(host: str, port: int) -> None:
    probe_host = "127.0.0.1" if host in ("0.0.0.0", "") else ("::1" if host == "::" else host)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection(probe_host, port, timeout=1)
            conn.request("GET", "/_fake/health")
            ok = conn.getresponse().status == 200
            conn.close()
            if ok:
                print(f"fake upstream listening on http://{host}:{port}", flush=True)
                return
        except OSError:
            pass
        time.sleep(0.02)
    print("fake upstream did not become ready", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ensemble.fake_upstream", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--chunks", type=int, default=20)
    parser.add_argument("--chunk-gap-ms", type=float, default=0.0)
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)

    from granian.constants import Interfaces, Loops
    from granian.log import LogLevels
    from granian.server import Server

    from .behavior import EndpointConfig

    defaults = {"latency_ms": args.latency_ms, "chunks": args.chunks, "chunk_gap_ms": args.chunk_gap_ms}
    EndpointConfig().update(defaults)  # validate before spawning workers
    os.environ["ENSEMBLE_FAKE_DEFAULTS"] = orjson.dumps(defaults).decode()

    threading.Thread(target=_announce_when_ready, args=(args.host, args.port), daemon=True).start()
    server = Server(
        "ensemble.fake_upstream.app:app_from_env",
        address=args.host,
        port=args.port,
        interface=Interfaces.RSGI,
        workers=args.workers,
        loop=Loops.uvloop,
        factory=True,
        log_level=LogLevels(args.log_level),
        backlog=2048,
    )
    server.serve()


if __name__ == "__main__":
    main()
