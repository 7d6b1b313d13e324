"""The project's fake upstream (ensemble.fake_upstream) as a subprocess, with its control API."""

from __future__ import annotations

import contextlib
import ssl
import sys
import weakref
from typing import TYPE_CHECKING, Any

import httpx

from support.processes import Process, free_port

if TYPE_CHECKING:
    from support.tls import LocalCA


# Fakes alive now, and what stopped ones left unchecked: the `upstream_conformance` fixture
# (tests/conftest.py) checks every upstream request a test made (support.conformance).
LIVE: weakref.WeakSet[FakeUpstream] = weakref.WeakSet()
UNCHECKED: list[str] = []


class FakeUpstream:
    """With `tls`, HTTPS with the CA's server certificate (ALPN h2 and http/1.1); else plain text
    (HTTP/1.1 and h2c with prior knowledge)."""

    def __init__(self, *args: str, tls: LocalCA | None = None) -> None:
        self.port = free_port()
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        if tls is not None:
            args = (*args, "--tls-cert", str(tls.cert_file), "--tls-key", str(tls.key_file))
        verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=str(tls.ca_file)) if tls is not None else True
        )
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
            env={"SSL_CERT_FILE": str(tls.ca_file)} if tls is not None else None,
        )
        self.process.wait_until(
            lambda: httpx.get(f"{self.url}/_fake/health", timeout=1, verify=verify).status_code == 200
        )
        self.http = httpx.Client(base_url=self.url, timeout=10, verify=verify)
        self._checked_seq = 0
        self._unchecked: list[str] = []
        LIVE.add(self)

    def conformance_problems(self) -> list[str]:
        """What the real providers would refuse in the requests received since the last call."""
        from support.conformance import problems

        found, self._unchecked = self._unchecked, []
        resp = self.http.get("/_fake/requests", params={"since": self._checked_seq})
        resp.raise_for_status()
        for record in resp.json()["requests"]:
            self._checked_seq = max(self._checked_seq, record["seq"])
            found += problems(record)
        return found

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

    def connections(self, endpoint: str = "default") -> dict[str, int]:
        """Distinct client connections that carried requests to `endpoint`, per HTTP version."""
        resp = self.http.get("/_fake/connections", params={"endpoint": endpoint})
        resp.raise_for_status()
        counts: dict[str, int] = resp.json()["connections"]
        return counts

    def reset(self) -> None:
        self._unchecked += self.conformance_problems()
        self.http.post("/_fake/reset").raise_for_status()

    def stop(self) -> None:
        if self in LIVE:
            LIVE.discard(self)
            with contextlib.suppress(httpx.HTTPError):  # the process is gone already: nothing to read
                UNCHECKED.extend(self.conformance_problems())
        self.http.close()
        self.process.stop()
