"""With `telemetry.otlp_endpoint` unset, no tracing code runs: neither Ensemble's tracing module nor
the OpenTelemetry trace SDK is ever loaded."""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_requests_without_otlp_never_load_a_tracer() -> None:
    code = (
        "import sys, json; sys.path.insert(0, 'benches/telemetry'); import bench; "
        "print(json.dumps(bench.run_mode('prometheus', 200, 1, '')))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=50)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["tracer_loaded"] is False


class _Sink(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_with_otlp_the_tracer_is_loaded() -> None:
    """The same harness does import it when tracing is on (so the check above can fail)."""
    sink = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{sink.server_address[1]}"
    code = (
        "import sys, json; sys.path.insert(0, 'benches/telemetry'); import bench; "
        f"print(json.dumps(bench.run_mode('otlp', 50, 1, {url!r})))"
    )
    try:
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=50
        )
    finally:
        sink.shutdown()
        sink.server_close()
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1])["tracer_loaded"] is True
