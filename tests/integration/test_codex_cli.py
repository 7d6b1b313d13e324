"""The real Codex CLI (`codex exec`) through Ensemble: a shell tool round trip on the fake upstream.

Codex speaks only the Responses API. It is installed from npm into a cache directory on first use
(pinned below), configured with a custom model provider whose `base_url` is the gateway
(`wire_api = "responses"`, a temporary CODEX_HOME), and run non-interactively in a read-only
sandbox. The fake upstream is scripted to answer Codex's first request with an `exec_command`
call; Codex runs it, sends the output back as `function_call_output`, and the fake's final text
ends the turn. Codex's hosted `web_search` tool is switched off: only OpenAI runs it (see
docs/responses.md), and the Claude and chat-completions routes would refuse it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.ensemble import Ensemble
from support.fake import FakeUpstream

# The first run installs Codex from npm (tens of MB): more than the suite's default 60 s may pass.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

CODEX_VERSION = "0.169.0"
CACHE = Path(os.environ.get("ENSEMBLE_TEST_CACHE", Path.home() / ".cache" / "ensemble-tests"))
UPSTREAM_KEY = "sk-test-upstream-key-000000"
MARKER = "codex-round-trip-ok"
# model → (provider type, fake endpoint, model extras)
MODELS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "claude-sonnet-4-6": ("anthropic", "codex-anthropic", {}),
    "gpt-4o": ("openai", "codex-openai", {}),
    "gpt-5": ("openai", "codex-openai-responses", {"api": "responses"}),
}


def codex_binary() -> Path:
    """The pinned Codex CLI, installed with npm into the test cache the first time."""
    prefix = CACHE / f"codex-{CODEX_VERSION}"
    binary = prefix / "node_modules" / ".bin" / "codex"
    if binary.exists():
        return binary
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail(
            "npm is needed to install the Codex CLI for this test (Node.js: see README prerequisites)"
        )
    prefix.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            npm,
            "install",
            "--prefix",
            str(prefix),
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
            f"@openai/codex@{CODEX_VERSION}",
        ],
        check=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    return binary


@pytest.fixture(scope="module")
def codex() -> Path:
    return codex_binary()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, fake: FakeUpstream) -> Iterator[Ensemble]:
    providers = [
        {
            "name": f"{kind}-{endpoint}",
            "type": kind,
            "base_url": fake.endpoint_url(endpoint),
            "endpoints": [{"id": endpoint, "api_key": UPSTREAM_KEY}],
            "models": [{"name": model, "max_output_tokens": 8192, **extra}],
        }
        for model, (kind, endpoint, extra) in MODELS.items()
    ]
    ens = Ensemble(Path(tmp_path_factory.mktemp("codex")), providers=providers)
    yield ens
    ens.stop()


def run_codex(codex: Path, server: Ensemble, model: str, home: Path, work: Path) -> list[dict[str, Any]]:
    home.mkdir()
    work.mkdir()
    (home / "config.toml").write_text(
        f'model = "{model}"\n'
        'model_provider = "ensemble"\n'
        'web_search = "disabled"\n'
        "[model_providers.ensemble]\n"
        'name = "Ensemble"\n'
        f'base_url = "{server.url}/v1"\n'
        'env_key = "ENSEMBLE_API_KEY"\n'
        'wire_api = "responses"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env.update(CODEX_HOME=str(home), ENSEMBLE_API_KEY=server.key)
    proc = subprocess.run(
        [
            str(codex),
            "exec",
            "--skip-git-repo-check",
            "--ephemeral",
            "--json",
            "--sandbox",
            "read-only",
            "--cd",
            str(work),
            "Run a shell command that prints the marker, then say hello",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


@pytest.mark.parametrize("model", list(MODELS))
def test_codex_exec_tool_round_trip(
    codex: Path, server: Ensemble, fake: FakeUpstream, tmp_path: Path, model: str
) -> None:
    kind, endpoint, _ = MODELS[model]
    fake.configure(
        endpoint,
        chunks=6,
        require_api_key=UPSTREAM_KEY,
        tool_call={"name": "exec_command", "arguments": {"cmd": f"echo {MARKER}"}},
    )
    events = run_codex(codex, server, model, tmp_path / "home", tmp_path / "work")
    commands = [
        e["item"]
        for e in events
        if e.get("type") == "item.completed" and e["item"]["type"] == "command_execution"
    ]
    assert len(commands) == 1 and f"echo {MARKER}" in commands[0]["command"]
    assert commands[0]["exit_code"] == 0 and MARKER in commands[0]["aggregated_output"]
    messages = [
        e["item"]["text"]
        for e in events
        if e.get("type") == "item.completed" and e["item"]["type"] == "agent_message"
    ]
    assert messages and messages[-1].startswith(f"Hello from fake-{kind}")
    assert events[-1]["type"] == "turn.completed"
    bodies = [r["body"] for r in fake.requests(endpoint) if isinstance(r["body"], dict)]
    assert len(bodies) == 2  # the tool call, then the answer to its output
    assert MARKER in json.dumps(bodies[-1])  # the command's output went back upstream
