"""Key changes saved while Redis is down (docs/scale-out.md): three instances, one real
redis-server that is killed and started again (empty, as after a crash without persistence).

Each instance's SQLite is the truth for what was saved there and Redis carries the news: a revoke
or a new key saved during the outage applies on its own instance at once, and everywhere within a
second of Redis returning (each instance reconciles on reconnect); also after a restart, with or
without Redis."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest

from support.cluster import Cluster
from support.ensemble import Ensemble
from support.waiting import wait_until

pytestmark = pytest.mark.integration

HELLO = {"model": "mock-1", "messages": [{"role": "user", "content": "outage"}]}
POLL = 1.0  # the server's key poll: a change saved by the CLI applies on its instance within it


def status(node: Ensemble, key: str) -> int:
    return httpx.post(
        f"{node.url}/api/v1/generate", json=HELLO, headers={"authorization": f"Bearer {key}"}, timeout=10
    ).status_code


def everywhere(nodes: list[Ensemble], key: str, want: int) -> bool:
    return all(status(n, key) == want for n in nodes)


def create(node: Ensemble, name: str) -> tuple[str, str, int]:
    out = node.cli("keys", "create", "--name", name, check=False)
    match = re.search(r"key id (key_\w+)", out.stderr)
    assert match, out.stderr
    return out.stdout.strip(), match.group(1), out.returncode


def test_key_changes_during_a_redis_outage_apply_here_at_once_and_everywhere_after(tmp_path: Path) -> None:
    with Cluster(tmp_path, "outage-test", key=False) as cluster:
        redis, nodes = cluster.redis, cluster.nodes
        a, b, c = nodes
        old, old_id, rc = create(a, "before")
        assert rc == 0
        wait_until(lambda: everywhere(nodes, old, 200), timeout=3, what="the key everywhere")

        redis.kill()
        revoke = a.cli("keys", "revoke", old_id, check=False)
        assert "as soon as Redis is back" in revoke.stderr, revoke.stderr
        wait_until(lambda: status(a, old) == 401, timeout=POLL + 1, what="the revoke on its own instance")
        new, _, rc = create(b, "during")
        assert rc == 1  # saved, not shared yet: the CLI says so
        wait_until(lambda: status(b, new) == 200, timeout=POLL + 1, what="the new key on its own instance")
        assert status(c, old) == 200 and status(c, new) == 401  # c cannot know yet

        redis.start()  # same port, empty
        back = time.monotonic()
        wait_until(
            lambda: everywhere(nodes, old, 401) and everywhere(nodes, new, 200),
            timeout=5,
            what="both changes everywhere",
        )
        took = time.monotonic() - back
        print(
            f"\nkey changes saved during the outage applied everywhere {took * 1000:.0f} ms after Redis returned"
        )
        assert took <= 1.0 + 0.5, took  # 1 s, plus the test's own requests through three instances

        # After a restart with Redis down, an instance serves what it learnt: it kept it in its SQLite.
        redis.kill()
        c.stop()
        restarted = cluster.start("c", key=False)
        nodes[2] = restarted
        assert status(restarted, old) == 401 and status(restarted, new) == 200
        redis.start()
        wait_until(
            lambda: everywhere(nodes, old, 401) and everywhere(nodes, new, 200),
            timeout=3,
            what="the cluster after the second outage",
        )
        for node in nodes:
            output = node.process.output()
            assert "Traceback" not in output and "was never retrieved" not in output, output[-3000:]
