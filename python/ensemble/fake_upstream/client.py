"""Start the fake upstream as a subprocess and drive its control API (for tests and benchmarks).

with FakeUpstreamProcess(chunks=5) as fake:
    fake.config("ep-a", latency_ms=50)
    fake.enqueue({"status": 429, "retry_after": 1}, endpoint="ep-a")
    ...  # point a provider endpoint at f"{fake.url}/ep-a"
    assert fake.requests("ep-a")[0]["body"]["model"] == "gpt-4o"
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

_PYTHON_DIR = str(Path(__file__).resolve().parents[2])


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


class FakeUpstreamProcess:
    """A ``python -m ensemble.fake_upstream`` child process on a free port."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int | None = None,
        workers: int = 1,
        latency_ms: float = 0,
        chunks: int = 20,
        chunk_gap_ms: float = 0,
        startup_timeout: float = 30,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.url = f"http://{host}:{self.port}"
        self._args = [
            "--host",
            host,
            "--port",
            str(self.port),
            "--workers",
            str(workers),
            "--latency-ms",
            str(latency_ms),
            "--chunks",
            str(chunks),
            "--chunk-gap-ms",
            str(chunk_gap_ms),
        ]
        self._timeout = startup_timeout
        self.proc: subprocess.Popen[str] | None = None
        self.http = httpx.Client(base_url=self.url, timeout=10)

    def start(self) -> FakeUpstreamProcess:
        path = os.environ.get("PYTHONPATH")
        env = {**os.environ, "PYTHONPATH": _PYTHON_DIR + (os.pathsep + path if path else "")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ensemble.fake_upstream", *self._args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # the readiness line (EOF if the child died)
        if not line.startswith("fake upstream listening on "):
            self.stop()
            raise RuntimeError(f"fake upstream failed to start on {self.url}: {line!r}")
        return self

    def stop(self) -> None:
        self.http.close()
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def __enter__(self) -> FakeUpstreamProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ---- control API ----------------------------------------------------------------------------

    def config(self, endpoint: str = "default", **fields: Any) -> dict[str, Any]:
        r = self.http.put("/_fake/config", json={"endpoint": endpoint, **fields})
        r.raise_for_status()
        out: dict[str, Any] = r.json()["config"]
        return out

    def enqueue(self, *behaviors: dict[str, Any], endpoint: str = "default") -> None:
        self.http.post(
            "/_fake/enqueue", json={"endpoint": endpoint, "behaviors": list(behaviors)}
        ).raise_for_status()

    def requests(self, endpoint: str | None = None) -> list[dict[str, Any]]:
        r = self.http.get("/_fake/requests", params={"endpoint": endpoint} if endpoint else None)
        r.raise_for_status()
        out: list[dict[str, Any]] = r.json()["requests"]
        return out

    def reset(self, endpoint: str | None = None) -> None:
        self.http.post("/_fake/reset", json={"endpoint": endpoint} if endpoint else {}).raise_for_status()
