"""A real `ensemble serve` subprocess on a free port, with its own config directory and database."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from support.processes import BIN, Process, free_port

MOCK_PROVIDER: dict[str, Any] = {
    "name": "mock",
    "type": "mock",
    "priority": 100,
    "mock": {"latency": "0ms", "chunks": 4, "chunk_gap": "0ms"},
    "endpoints": [{"id": "mock-local"}],
    "models": [
        {
            "name": "mock-1",
            "max_output_tokens": 4096,
            "pricing": {"input": 1.0, "output": 2.0, "cache_read": 0.1, "cache_write": 1.25},
        },
    ],
}


def openai_provider(
    base_url: str,
    name: str = "openai",
    models: list[str] | None = None,
    endpoints: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "name": name,
        "type": "openai",
        "base_url": base_url,
        "endpoints": endpoints or [{"id": f"{name}-primary", "api_key": "sk-test-upstream-key-000000"}],
        "models": [
            {
                "name": m,
                "max_output_tokens": 16384,
                "pricing": {"input": 2.5, "output": 10.0, "cache_read": 1.25},
            }
            for m in (models or ["gpt-4o"])
        ],
        **extra,
    }


def fake_provider(kind: str, base_url: str, models: list[str], **model_extra: Any) -> dict[str, Any]:
    """A provider file of type `kind` (its name too) on one endpoint of the fake upstream, serving
    `models` (each with `model_extra`, e.g. pricing)."""
    return {
        "name": kind,
        "type": kind,
        "base_url": base_url,
        "endpoints": [{"id": f"{kind}-primary", "api_key": "sk-test-upstream-key-000000"}],
        "models": [{"name": m, "max_output_tokens": 8192, **model_extra} for m in models],
    }


class Ensemble:
    def __init__(
        self,
        directory: Path,
        providers: list[dict[str, Any]] | None = None,
        config: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
        workers: int = 1,
        key: bool = True,
    ) -> None:
        self.dir = directory
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (directory / "providers").mkdir(parents=True, exist_ok=True)
        main = {
            "server": {"host": "127.0.0.1", "port": self.port, "workers": workers, "drain_timeout": "10s"},
            "database": {"path": str(directory / "data" / "ensemble.db")},
            "logging": {"level": "info", "format": "json"},
        }
        for section, values in (config or {}).items():
            main.setdefault(section, {}).update(values) if isinstance(values, dict) else main.__setitem__(
                section, values
            )
        self.config_path = directory / "ensemble.yaml"
        self.config_path.write_text(yaml.safe_dump(main))
        for p in providers if providers is not None else [MOCK_PROVIDER]:
            (directory / "providers" / f"{p['name']}.yaml").write_text(yaml.safe_dump(p))
        self.env = {"ENSEMBLE_ENVIRONMENT": "development", **(env or {})}
        self.key = self.create_key("test") if key else ""
        self.process = Process(
            "ensemble", [str(BIN / "ensemble"), "serve", "--config", str(self.config_path)], env=self.env
        )
        self.process.wait_until(lambda: httpx.get(f"{self.url}/health", timeout=1).status_code == 200)

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "ensemble"), *args, "--config", str(self.config_path)]
            if args[0] != "version"
            else [str(BIN / "ensemble"), *args],
            capture_output=True,
            text=True,
            env={**os.environ, **self.env},
            check=check,
            timeout=60,
        )

    def create_key(self, name: str, *extra: str) -> str:
        out = self.cli("keys", "create", "--name", name, *extra)
        return out.stdout.strip()

    def wait_for_key(self, key: str, timeout: float = 3.0) -> float:
        """Block until the running server accepts `key` (it polls the database); returns the wait."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if (
                httpx.get(f"{self.url}/api/v1/models", headers={"authorization": f"Bearer {key}"}).status_code
                != 401
            ):
                return time.monotonic() - start
            time.sleep(0.05)
        raise AssertionError(f"key not accepted within {timeout}s")

    def provider_health(self, provider: str) -> str:
        """healthy | degraded (every endpoint cooling down) | unavailable, from `GET /health`."""
        return str(httpx.get(f"{self.url}/health", timeout=5).json()["providers"][provider])

    def client(self, key: str | None = None, **kw: Any) -> httpx.Client:
        headers = {"authorization": f"Bearer {key or self.key}"} if (key or self.key) else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=kw.pop("timeout", 30), **kw)

    def stop(self) -> int:
        return self.process.stop()


def python() -> str:
    return sys.executable
