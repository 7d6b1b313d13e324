"""Start the fake upstream once per session as a subprocess on a free port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Fake:
    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx.Client(base_url=url, timeout=10)

    def config(self, endpoint: str = "default", **fields: Any) -> dict[str, Any]:
        r = self.http.put("/_fake/config", json={"endpoint": endpoint, **fields})
        r.raise_for_status()
        out: dict[str, Any] = r.json()
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

    def reset(self) -> None:
        self.http.post("/_fake/reset").raise_for_status()


def start_fake(*extra: str) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "python")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ensemble.fake_upstream", "--host", "127.0.0.1", "--port", str(port), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == f"fake upstream listening on http://127.0.0.1:{port}", line
    return proc, f"http://127.0.0.1:{port}"


def stop_fake(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


@pytest.fixture(scope="session")
def fake_server() -> Iterator[Fake]:
    proc, url = start_fake()
    fake = Fake(url)
    try:
        yield fake
    finally:
        fake.http.close()
        stop_fake(proc)


@pytest.fixture
def fake(fake_server: Fake) -> Fake:
    fake_server.reset()
    return fake_server
