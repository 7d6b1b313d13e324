"""`python -m ensemble.tools.deps` as a developer runs it: the graph on stdout, exit 0 (no cycle)."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_the_deps_tool_runs_and_finds_no_cycle() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ensemble.tools.deps"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    graph = dict(line.split(" -> ") for line in done.stdout.splitlines())
    assert "batch" in graph["server"] and "server" not in graph["batch"]
    assert "telemetry" in graph["server"] and "server" not in graph["telemetry"]
    assert "storage" in graph["ratelimit"] and "ratelimit" not in graph["storage"]
    assert "config" in graph["providers"] and "providers" not in graph["config"]
