"""The README's Quick start, run as a newcomer runs it: `make run` from the repository root on the
shipped config, the notice it prints, its curl line, the README's own commands, a second `make run`;
and where the server listens in each environment.

Only the port and the database are moved (ENSEMBLE_PORT, ENSEMBLE_DATABASE: the shipped config reads
both) so that the test never meets a developer's own server or data; `make` is told the extension is
built (`-o`), since the suite runs on it."""

from __future__ import annotations

import base64
import os
import re
import socket
import subprocess
from pathlib import Path

import httpx
import orjson
import pytest

from ensemble.ready_notice import RULE
from support.markdown import README, runnable_commands
from support.processes import BIN, ROOT, Process, free_port
from support.waiting import wait_until

pytestmark = pytest.mark.integration

VENV = BIN.parent
MAKE_VENV = str(VENV.relative_to(ROOT)) if VENV.is_relative_to(ROOT) else str(VENV)
# What a newcomer's shell does not have: no provider keys, no environment chosen, no host.
UNSET = (
    "ENSEMBLE_ENVIRONMENT",
    "ENSEMBLE_HOST",
    "ENSEMBLE_ENCRYPTION_KEY",
    "ENSEMBLE_ADMIN_KEY",
    "REDIS_ADDRESS",
)
SECRETS = {
    "ENSEMBLE_ENCRYPTION_KEY": base64.b64encode(b"k" * 32).decode(),
    "ENSEMBLE_ADMIN_KEY": "admin-key-x",
}
PROVIDER_KEYS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "XAI_API_KEY", "OPENROUTER_API_KEY")


def newcomer_env(data: Path, port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in UNSET + PROVIDER_KEYS}
    return {**env, "ENSEMBLE_PORT": str(port), "ENSEMBLE_DATABASE": str(data / "ensemble.db"), **extra}


def make_run(data: Path, port: int) -> Process:
    argv = ["make", "--no-print-directory", f"VENV={MAKE_VENV}", "-o", f"{MAKE_VENV}/.ensemble-built", "run"]
    return Process("make-run", argv, env=newcomer_env(data, port), cwd=ROOT)


def notice_of(process: Process) -> tuple[str, str]:
    """(everything before the notice, the notice), once the notice is complete."""
    out = wait_until(lambda: process.output().count(RULE) >= 2 and process.output(), 60, "the notice")
    before, notice, _ = out.split(RULE, 2)
    return before, notice


def bash(script: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-e", "-c", script], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60
    )


def paste(notice: str) -> str:
    """The lines the notice offers to paste: the indented ones, as a reader selects them."""
    return "\n".join(line for line in notice.splitlines() if line.startswith("  "))


def answered(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    body = orjson.loads(result.stdout)
    assert body["model"] == "mock-1" and body["content"], body
    return str(body["content"])


def stop(process: Process, port: int) -> None:
    process.stop()
    wait_until(lambda: not accepts("127.0.0.1", port), 30, "the server stopped")


def accepts(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError:
        return False
    return True


def test_make_run_then_the_printed_curl_line_then_a_second_make_run(tmp_path: Path) -> None:
    data = tmp_path / "data"
    port = free_port()
    first = make_run(data, port)
    try:
        before, notice = notice_of(first)
        # The install and start-up lines come first, readable; the notice is the last thing printed.
        assert '{"ts"' not in before and "Collecting " not in before, before
        assert "has no API key: reported unavailable" in before  # the providers' warnings, as text
        assert first.output().rstrip().endswith(RULE)
        assert f"Ensemble is ready at http://127.0.0.1:{port}" in notice and "only this machine" in notice
        assert "A first client API key was created" in notice
        key = re.findall(r"export ENSEMBLE_KEY=(ens_\S+)", notice)[0]
        env = newcomer_env(data, port)
        answered(bash(paste(notice), env))  # pasted as shown: the key, then curl
        # The README's own lines, as written (only its port is this test's).
        readme = [
            c.replace(":5180", f":{port}") for c in runnable_commands(README) if not c.startswith("make ")
        ]
        assert any(c.startswith("curl ") for c in readme) and any("keys create" in c for c in readme)
        answered(bash("\n".join(readme), env))
        assert not accepts("127.0.0.2", port)  # development listens on loopback only
    finally:
        stop(first, port)

    port = free_port()
    second = make_run(data, port)
    try:
        _, notice = notice_of(second)
        assert "A first client API key" not in notice and key not in second.output()
        assert f"export ENSEMBLE_KEY=$({MAKE_VENV}/bin/ensemble keys create --name my-app)" in notice
        answered(bash(paste(notice), newcomer_env(data, port)))
    finally:
        stop(second, port)


def test_a_first_key_nobody_saw_is_revoked_and_the_next_start_shows_a_new_one(tmp_path: Path) -> None:
    """A server that cannot listen (the port is taken) never shows its key: the next start makes one."""
    data = tmp_path / "data"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        failed = Process("serve", [str(BIN / "ensemble"), "serve"], env=newcomer_env(data, port), cwd=ROOT)
        assert failed.proc.wait(60) != 0
        assert RULE not in failed.output()
    port = free_port()
    again = Process("serve", [str(BIN / "ensemble"), "serve"], env=newcomer_env(data, port), cwd=ROOT)
    try:
        _, notice = notice_of(again)
        assert "A first client API key was created" in notice
    finally:
        stop(again, port)


@pytest.mark.parametrize(
    ("args", "env", "everywhere"),
    [
        ([], {}, False),  # development: loopback only
        (["--host", "0.0.0.0"], {}, True),  # --host wins
        ([], {"ENSEMBLE_HOST": "0.0.0.0"}, True),  # the shipped config reads ENSEMBLE_HOST
        ([], {"ENSEMBLE_ENVIRONMENT": "production", **SECRETS}, True),
        (["--host", "127.0.0.1"], {"ENSEMBLE_ENVIRONMENT": "staging", **SECRETS}, False),  # --host wins
    ],
    ids=["development", "--host", "ENSEMBLE_HOST", "production", "staging --host 127.0.0.1"],
)
def test_where_the_shipped_config_listens(
    tmp_path: Path, args: list[str], env: dict[str, str], everywhere: bool
) -> None:
    port = free_port()
    server = Process(
        "serve", [str(BIN / "ensemble"), "serve", *args], env=newcomer_env(tmp_path, port, **env), cwd=ROOT
    )
    try:
        server.wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200)
        assert accepts("127.0.0.2", port) is everywhere
        development = "ENSEMBLE_ENVIRONMENT" not in env
        if not development:  # JSON lines outside development
            assert '{"ts"' in wait_until(lambda: '"worker' in server.output() and server.output(), 10, "logs")
    finally:
        stop(server, port)
