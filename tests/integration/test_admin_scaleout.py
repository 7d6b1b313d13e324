"""Admin key changes across instances that share only a real redis-server (separate SQLite files):
a key created, narrowed, disabled or revoked through one instance's admin API applies on the other
within about a second. The admin status page shows Redis's state."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from support.cluster import Cluster
from support.ensemble import Ensemble

pytestmark = pytest.mark.integration

ADMIN = "adm_" + secrets.token_urlsafe(24)
HELLO = {"model": "mock-1", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = Path(tmp_path_factory.mktemp("admin-cluster"))
    with Cluster(root, "admin-test", ("a", "b"), env={"ENSEMBLE_ADMIN_KEY": ADMIN}) as c:
        yield c


def admin(node: Ensemble, method: str, path: str, **kw: object) -> httpx.Response:
    return httpx.request(
        method,
        node.url + path,
        headers={"authorization": f"Bearer {ADMIN}"},
        timeout=10,
        **kw,  # type: ignore[arg-type]
    )


def status_on(node: Ensemble, key: str) -> int:
    return httpx.post(
        node.url + "/api/v1/generate", json=HELLO, headers={"authorization": f"Bearer {key}"}, timeout=10
    ).status_code


def within(seconds: float, check: Callable[[], bool]) -> float:
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < seconds, "not applied in time"
        time.sleep(0.05)
    return time.monotonic() - start


def test_admin_key_changes_reach_the_other_instance_through_redis(
    pair: Cluster,
) -> None:
    a, b = pair.nodes
    r = admin(a, "POST", "/admin/keys", json={"name": "shared"})
    assert r.status_code == 201 and "warning" not in r.headers
    key, key_id = r.json()["key"], r.json()["key_id"]
    assert within(1.5, lambda: status_on(b, key) == 200) <= 1.5
    # It came through Redis (b's SQLite had never seen it), and b keeps it for a restart.
    assert within(1.5, lambda: admin(b, "GET", f"/admin/keys/{key_id}/config").status_code == 200) <= 1.5

    r = admin(a, "PUT", f"/admin/keys/{key_id}/config", json={"allowed_models": ["other-model"]})
    assert r.status_code == 200
    within(1.5, lambda: status_on(b, key) == 403)
    r = admin(a, "POST", f"/admin/keys/{key_id}/status", json={"status": "disabled"})
    assert r.status_code == 200
    within(1.5, lambda: status_on(b, key) == 401)
    admin(a, "PUT", f"/admin/keys/{key_id}/config", json={"allowed_models": []})
    admin(a, "POST", f"/admin/keys/{key_id}/status", json={"status": "active"})
    within(1.5, lambda: status_on(b, key) == 200)
    assert admin(a, "POST", f"/admin/keys/{key_id}/revoke").status_code == 200
    took = within(1.5, lambda: status_on(b, key) == 401 and status_on(a, key) == 401)
    assert took <= 1.5


def test_status_shows_redis_and_a_change_while_redis_is_down_says_it_was_not_shared(
    pair: Cluster,
) -> None:
    a, redis = pair.nodes[0], pair.redis
    s = admin(a, "GET", "/admin/status").json()
    assert s["redis"]["configured"] is True
    redis.kill()
    r = admin(a, "POST", "/admin/keys", json={"name": "while-down"})
    assert r.status_code == 201
    assert "not yet shared" in r.headers.get("warning", "")
    assert status_on(a, r.json()["key"]) == 200  # it works where it was made
