"""``python -m ensemble.fake_upstream --host 127.0.0.1 --port P [--workers 1] [--latency-ms 0]
[--chunks 20] [--chunk-gap-ms 0] [--tls-cert PEM --tls-key PEM]``: serve the fake upstream with
Granian (RSGI, uvloop).

HTTP/1.1 and HTTP/2 on one port: h2c with prior knowledge in plain text, ALPN (h2, http/1.1) with
``--tls-cert``/``--tls-key``. Prints ``fake upstream listening on http(s)://H:P`` on stdout once
``/_fake/health`` answers (over TLS the probe verifies the certificate against the default trust
store, so point ``SSL_CERT_FILE`` at the CA that issued it).
"""

from __future__ import annotations

import argparse
import http.client
import os
import ssl
import sys
import threading
import time
from pathlib import Path

import orjson


def _announce_when_ready(host: str, port: int, tls: bool) -> None:
    probe_host = "127.0.0.1" if host in ("0.0.0.0", "") else ("::1" if host == "::" else host)
    scheme = "https" if tls else "http"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            conn = (
                http.client.HTTPSConnection(probe_host, port, timeout=1, context=ssl.create_default_context())
                if tls
                else http.client.HTTPConnection(probe_host, port, timeout=1)
            )
            conn.request("GET", "/_fake/health")
            ok = conn.getresponse().status == 200
            conn.close()
            if ok:
                print(f"fake upstream listening on {scheme}://{host}:{port}", flush=True)
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
    parser.add_argument("--tls-cert", help="PEM certificate (chain): serve HTTPS, ALPN h2 and http/1.1")
    parser.add_argument("--tls-key", help="PEM private key of --tls-cert")
    parser.add_argument(
        "--http", choices=("auto", "1", "2"), default="auto", help="HTTP versions served (default: both)"
    )
    args = parser.parse_args(argv)
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")

    from granian.constants import HTTPModes, Interfaces, Loops
    from granian.log import LogLevels
    from granian.server import Server

    from .behavior import EndpointConfig

    defaults = {"latency_ms": args.latency_ms, "chunks": args.chunks, "chunk_gap_ms": args.chunk_gap_ms}
    EndpointConfig().update(defaults)  # validate before spawning workers
    os.environ["ENSEMBLE_FAKE_DEFAULTS"] = orjson.dumps(defaults).decode()

    tls = bool(args.tls_cert)
    threading.Thread(target=_announce_when_ready, args=(args.host, args.port, tls), daemon=True).start()
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
        http=HTTPModes(args.http),
        ssl_cert=Path(args.tls_cert) if tls else None,
        ssl_key=Path(args.tls_key) if tls else None,
    )
    server.serve()


if __name__ == "__main__":
    main()
