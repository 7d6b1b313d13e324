"""The Python client README's examples run as written against a real gateway."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from client.stack import Stack
from support.processes import ROOT

pytestmark = pytest.mark.integration

README = ROOT / "python" / "ensemble" / "client" / "README.md"


def examples() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_examples_run_as_written(stack: Stack, tmp_path: Path) -> None:
    blocks = examples()
    assert len(blocks) == 3
    env = {**os.environ, "ENSEMBLE_URL": stack.gateway.url, "ENSEMBLE_API_KEY": stack.gateway.key}
    outputs = []
    for i, code in enumerate(blocks):
        script = tmp_path / f"example_{i}.py"
        script.write_text(code)
        done = subprocess.run(
            [sys.executable, "-W", "error", str(script)], capture_output=True, text=True, env=env, timeout=60
        )
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout)
    assert "This is a mock answer from Ensemble. You said: Say hello" in outputs[0]
    assert "stream cost: 0.0000" in outputs[0] and "completed" in outputs[0]
    assert "bad request: 400 invalid_request req_" in outputs[0]
    assert "You said: question 2" in outputs[1] and "You said: streamed" in outputs[1]
    assert outputs[2].strip() == "closed"
