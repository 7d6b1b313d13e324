"""The project's fake upstream (ensemble.fake_upstream) as a subprocess, with its control API."""

from __future__ import annotations

import sys
from typing import Any

import httpx

from support.processes import Process, free_port


class FakeUpstream:
    def __init__(self, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = Process(
            "fake-upstream",
            [
                sys.executable,
                "-m",
                "ensemble.fake_upstream",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                *args,
            ],
        )
        self.process.wait_until(lambda: httpx.get(f"{self.url}/_fake/health", timeout=1).status_code == 200)
        self.http = httpx.Client(base_url=self.url, timeout=10)

    def endpoint_url(self, endpoint: str) -> str:
        """The base_url that makes Ensemble talk to the virtual endpoint `endpoint`."""
        return f"{self.url}/{endpoint}"

    def configure(self, endpoint: str = "default", **settings: Any) -> None:
        self.http.put("/_fake/config", json={"endpoint": endpoint, **settings}).raise_for_status()

    def enqueue(self, endpoint: str, *behaviors: dict[str, Any]) -> None:
        self.http.post(
            "/_fake/enqueue", json={"endpoint": endpoint, "behaviors": list(behaviors)}
        ).raise_for_status()

    def requests(self, endpoint: str | None = None) -> list[dict[str, Any]]:
        params = {"endpoint": endpoint} if endpoint else {}
        resp = self.http.get("/_fake/requests", params=params)
        resp.raise_for_status()
        data = resp.json()
        return list(data["requests"] if isinstance(data, dict) else data)

    def reset(self) -> None:
        self.http.post("/_fake/reset").raise_for_status()

    def stop(self) -> None:
        self.http.close()
        self.process.stop()
