"""The admin API (see docs/admin-api.md) against a real two-worker `ensemble serve` and the fake upstream.

Two workers, so every change made through one worker must reach the other through the database
within about a second (requests open a fresh connection each, so they land on either worker).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ensemble.server import app
from support.ensemble import MOCK_PROVIDER, Ensemble, openai_provider
from support.fake import FakeUpstream
from support.processes import BIN, free_port

pytestmark = pytest.mark.integration

ADMIN = "adm_" + secrets.token_urlsafe(24)
HELLO = [{"role": "user", "content": "Hello there, admin"}]
PROPAGATION_S = 2.0  # docs/admin-api.md: within one second; allow scheduling slack on a busy machine

# Every admin route of the table (the dispatcher enforces `auth`), with sample path parameters: a new
# admin route is covered by the checks below without being listed here.
SAMPLE_PARAMS = {"key_id": "key_0", "endpoint_id": "vault-1"}
ROUTES: list[tuple[str, str]] = [
    (r.method, r.path.format(**SAMPLE_PARAMS)) for r in app.ROUTES if r.auth == "admin"
]


class Gateway:
    def __init__(self, server: Ensemble, fake: FakeUpstream) -> None:
        self.server = server
        self.fake = fake
        self.workers_seen: set[str] = set()  # request-id prefixes: one per worker process

    def _saw(self, r: httpx.Response) -> httpx.Response:
        self.workers_seen.add(r.headers.get("x-request-id", "")[:12])
        return r

    def everywhere(self, check: Callable[[], bool], tries: int = 60) -> bool:
        """True when `check` holds on fresh connections until both workers have answered (told apart
        by the per-process prefix of their request ids); False as soon as it does not hold. Which
        worker accepts a connection is up to the kernel, and it is not an even coin: eight calls in a
        row sometimes all reached the same worker."""
        self.workers_seen.clear()
        for attempt in range(tries):
            if not check():
                return False
            if len(self.workers_seen) >= 2 and attempt >= 3:
                return True
            time.sleep(0.005)
        return False

    def admin(self, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = {"authorization": f"Bearer {ADMIN}", **kw.pop("headers", {})}
        return httpx.request(method, self.server.url + path, headers=headers, timeout=30, **kw)

    def accepts(self, key: str) -> bool:
        r = httpx.get(self.server.url + "/api/v1/models", headers={"authorization": f"Bearer {key}"})
        return self._saw(r).status_code == 200

    def call(self, key: str, model: str = "mock-1", path: str = "/api/v1/generate") -> httpx.Response:
        return self._saw(
            httpx.post(
                self.server.url + path,
                json={"model": model, "messages": HELLO},
                headers={"authorization": f"Bearer {key}"},
                timeout=30,
            )
        )


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    fake = FakeUpstream()
    vault = openai_provider(
        fake.endpoint_url("vault"),
        name="vault",
        models=["gpt-vault"],
        endpoints=[{"id": "vault-1"}],  # no api_key: uses the credential stored through the admin API
    )
    dead = openai_provider(
        f"http://127.0.0.1:{free_port()}",  # nothing listens here
        name="dead",
        models=["gpt-dead"],
        endpoints=[{"id": "dead-1", "api_key": "sk-dead-endpoint-0000000"}],
    )
    server = Ensemble(
        Path(tmp_path_factory.mktemp("admin")),
        providers=[MOCK_PROVIDER, vault, dead],
        env={"ENSEMBLE_ADMIN_KEY": ADMIN},
        workers=2,
    )
    yield Gateway(server, fake)
    server.stop()
    fake.stop()


def eventually(check: Callable[[], bool], timeout: float = PROPAGATION_S) -> float:
    """Poll `check` until it holds; returns how long that took (fails after `timeout`)."""
    start = time.monotonic()
    while True:
        if check():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.05)


# -- authentication ------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_every_route_refuses_missing_wrong_and_client_keys(gw: Gateway, method: str, path: str) -> None:
    url = gw.server.url + path
    attempts = {
        "none": {},
        "client key": {"authorization": f"Bearer {gw.server.key}"},
        "client key as x-api-key": {"x-api-key": gw.server.key},
        "wrong admin key": {"authorization": f"Bearer {ADMIN}x"},
        "admin key prefix": {"authorization": f"Bearer {ADMIN[:-1]}"},
        "wrong scheme": {"authorization": f"Basic {ADMIN}"},
        "admin key without scheme": {"authorization": ADMIN},
    }
    for label, headers in attempts.items():
        r = httpx.request(method, url, headers=headers, json={"name": "x"}, timeout=10)
        assert r.status_code == 401, (label, r.status_code, r.text)
        body = r.json()
        assert body["error"]["type"] == "authentication", label
        assert ADMIN not in r.text and gw.server.key not in r.text
        assert r.headers["x-request-id"] == body["error"]["request_id"]


def test_admin_api_is_disabled_with_503_when_the_admin_key_is_unset(tmp_path: Path) -> None:
    server = Ensemble(tmp_path)
    try:
        for method, path in ROUTES:
            for headers in ({}, {"authorization": "Bearer anything"}):
                r = httpx.request(method, server.url + path, headers=headers, timeout=10)
                assert r.status_code == 503, (method, path, r.text)
                assert r.json()["error"]["code"] == "admin_disabled"
                assert "ENSEMBLE_ADMIN_KEY" in r.json()["error"]["message"]
    finally:
        assert server.stop() == 0


# -- keys ----------------------------------------------------------------------------------------


def test_key_lifecycle_applies_on_every_worker_within_a_second(gw: Gateway) -> None:
    r = gw.admin(
        "POST",
        "/admin/keys",
        json={"name": "lifecycle", "customer_id": "cus_1", "allowed_models": ["mock-1"]},
    )
    assert r.status_code == 201, r.text
    created = r.json()
    assert set(created) == {"key", "key_id", "prefix"}
    key, key_id = created["key"], created["key_id"]
    assert key.startswith("ens_") and len(key) >= 36 and key.startswith(created["prefix"])

    eventually(lambda: gw.everywhere(lambda: gw.call(key).status_code == 200))

    r = gw.admin("GET", f"/admin/keys/{key_id}/config")
    assert r.status_code == 200
    assert r.json() == {
        "key_id": key_id,
        "prefix": created["prefix"],
        "name": "lifecycle",
        "customer_id": "cus_1",
        "status": "active",
        "rate_limit_rpm": 0,
        "rate_limit_tpm": 0,
        "allowed_models": ["mock-1"],
        "created_at": r.json()["created_at"],
    }
    assert key not in r.text

    # Narrow the allowed models: 403 everywhere within a second.
    r = gw.admin(
        "PUT", f"/admin/keys/{key_id}/config", json={"allowed_models": ["gpt-vault"], "name": "renamed"}
    )
    assert r.status_code == 200 and r.json()["allowed_models"] == ["gpt-vault"]
    assert r.json()["name"] == "renamed" and r.json()["customer_id"] == "cus_1"  # untouched fields stay
    eventually(lambda: gw.everywhere(lambda: gw.call(key).status_code == 403))
    gw.admin("PUT", f"/admin/keys/{key_id}/config", json={"allowed_models": []})
    eventually(lambda: gw.everywhere(lambda: gw.call(key).status_code == 200))

    # Disable, re-enable.
    r = gw.admin("POST", f"/admin/keys/{key_id}/status", json={"status": "disabled"})
    assert r.status_code == 200 and r.json()["status"] == "disabled"
    eventually(lambda: gw.everywhere(lambda: gw.call(key).status_code == 401))
    assert gw.call(key).json()["error"]["code"] == "key_disabled"
    r = gw.admin("POST", f"/admin/keys/{key_id}/status", json={"status": "active"})
    assert r.json()["status"] == "active"
    eventually(lambda: gw.everywhere(lambda: gw.call(key).status_code == 200))

    # Revoke: refused everywhere within a second, and a revoked key cannot come back.
    r = gw.admin("POST", f"/admin/keys/{key_id}/revoke")
    assert r.status_code == 200 and r.json()["status"] == "revoked"
    took = eventually(lambda: gw.everywhere(lambda: gw.call(key).status_code == 401))
    assert took <= PROPAGATION_S
    r = gw.admin("POST", f"/admin/keys/{key_id}/status", json={"status": "active"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "key_revoked"
    assert gw.call(key).status_code == 401


def test_key_limits_zero_or_absent_mean_the_config_default(gw: Gateway) -> None:
    r = gw.admin("POST", "/admin/keys", json={"name": "limited", "rate_limit_rpm": 2, "rate_limit_tpm": 0})
    key, key_id = r.json()["key"], r.json()["key_id"]
    cfg = gw.admin("GET", f"/admin/keys/{key_id}/config").json()
    assert cfg["rate_limit_rpm"] == 2 and cfg["rate_limit_tpm"] == 0
    eventually(lambda: gw.everywhere(lambda: gw.accepts(key)))
    # rpm 2 per worker window: with two workers at most 4 of these pass.
    codes = [gw.call(key).status_code for _ in range(8)]
    assert codes.count(429) >= 3, codes
    r = gw.call(key)
    if r.status_code == 429:
        assert int(r.headers["retry-after"]) >= 1


def test_list_keys_paginates(gw: Gateway) -> None:
    for i in range(3):
        assert gw.admin("POST", "/admin/keys", json={"name": f"page-{i}"}).status_code == 201
    everything = gw.admin("GET", "/admin/keys", params={"limit": 1000}).json()
    total = everything["total"]
    assert total == len(everything["keys"]) >= 4
    names = [k["name"] for k in everything["keys"]]
    assert {"page-0", "page-1", "page-2"} <= set(names)
    pages = [
        gw.admin("GET", "/admin/keys", params={"limit": 2, "offset": o}).json() for o in range(0, total, 2)
    ]
    assert all(p["total"] == total for p in pages)
    assert [k["key_id"] for p in pages for k in p["keys"]] == [k["key_id"] for k in everything["keys"]]
    for k in everything["keys"]:
        assert set(k) == {
            "key_id", "prefix", "name", "customer_id", "status", "rate_limit_rpm",
            "rate_limit_tpm", "allowed_models", "created_at",
        }  # fmt: skip
        assert "key" not in k
    for bad in ({"limit": -1}, {"limit": "x"}, {"limit": 5000}, {"offset": "1e3"}, {"page": 2}):
        r = gw.admin("GET", "/admin/keys", params=bad)
        assert r.status_code == 400, (bad, r.text)
        assert next(iter(bad)) in r.json()["error"]["message"]


def test_key_body_validation_names_the_field(gw: Gateway) -> None:
    cases = [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": 5}, "name"),
        ({"name": "x", "rate_limit_rpm": -1}, "rate_limit_rpm"),
        ({"name": "x", "rate_limit_tpm": "many"}, "rate_limit_tpm"),
        ({"name": "x", "allowed_models": "mock-1"}, "allowed_models"),
        ({"name": "x", "colour": "red"}, "colour"),
    ]
    for body, field in cases:
        r = gw.admin("POST", "/admin/keys", json=body)
        assert r.status_code == 400, (body, r.text)
        assert field in r.json()["error"]["message"], (body, r.text)
    for path in ("/admin/keys/key_nope/config", "/admin/keys/key_nope/usage"):
        r = gw.admin("GET", path)
        assert r.status_code == 404 and r.json()["error"]["code"] == "key_not_found"
    assert gw.admin("POST", "/admin/keys/key_nope/revoke").status_code == 404
    assert gw.admin("PUT", "/admin/keys/key_nope/config", json={"name": "x"}).status_code == 404
    r = gw.admin("POST", "/admin/keys/key_nope/status", json={"status": "revoked"})
    assert r.status_code == 400 and "status" in r.json()["error"]["message"]


# -- customers -----------------------------------------------------------------------------------


def test_customers_create_and_list(gw: Gateway) -> None:
    made = []
    for i in range(3):
        r = gw.admin("POST", "/admin/customers", json={"name": f"Acme {i}", "email": f"ops{i}@acme.test"})
        assert r.status_code == 201, r.text
        c = r.json()
        assert set(c) == {"customer_id", "name", "email", "created_at"} and c["customer_id"].startswith(
            "cus_"
        )
        made.append(c)
    listed = gw.admin("GET", "/admin/customers").json()
    assert listed["total"] >= 3
    assert all(c in listed["customers"] for c in made)
    second = gw.admin("GET", "/admin/customers", params={"limit": 1, "offset": 1}).json()
    assert second["customers"] == listed["customers"][1:2] and second["total"] == listed["total"]
    assert gw.admin("POST", "/admin/customers", json={"email": "a@b.c"}).status_code == 400
    r = gw.admin("POST", "/admin/customers", json={"name": "x", "email": "not an email"})
    assert r.status_code == 400 and "email" in r.json()["error"]["message"]
    # The key's customer is what the admin set.
    key = gw.admin("POST", "/admin/keys", json={"name": "c", "customer_id": made[0]["customer_id"]}).json()
    assert (
        gw.admin("GET", f"/admin/keys/{key['key_id']}/config").json()["customer_id"] == made[0]["customer_id"]
    )


# -- provider credentials ------------------------------------------------------------------------


def test_stored_credential_is_used_by_every_worker_and_never_returned(gw: Gateway) -> None:
    secret = "sk-vault-" + secrets.token_hex(16)
    gw.fake.configure("vault", require_api_key=secret)
    r = gw.admin("GET", "/admin/endpoints/vault-1/credential")
    assert r.status_code == 200
    assert r.json() | {"updated_at": None} == {
        "endpoint_id": "vault-1",
        "provider": "vault",
        "stored": False,
        "hint": None,
        "key_version": None,
        "updated_at": None,
        "source": "none",
        "error": None,
    }
    assert gw.call(gw.server.key, "gpt-vault").status_code == 503  # no credential: unavailable

    r = gw.admin("PUT", "/admin/endpoints/vault-1/credential", json={"api_key": secret})
    assert r.status_code == 200, r.text
    view = r.json()
    assert secret not in r.text
    assert view["stored"] is True and view["source"] == "stored" and view["error"] is None
    assert view["hint"] == f"{secret[:4]}…{secret[-4:]}"
    assert isinstance(view["key_version"], int)
    eventually(lambda: gw.everywhere(lambda: gw.call(gw.server.key, "gpt-vault").status_code == 200))
    seen = {req["headers"].get("authorization") for req in gw.fake.requests("vault")}
    assert seen == {f"Bearer {secret}"}  # the decrypted key went upstream, nothing else did
    got = gw.admin("GET", "/admin/endpoints/vault-1/credential")
    assert got.json()["hint"] == view["hint"] and secret not in got.text

    r = gw.admin("DELETE", "/admin/endpoints/vault-1/credential")
    assert r.status_code == 200 and r.json()["deleted"] is True and r.json()["stored"] is False
    eventually(lambda: gw.everywhere(lambda: gw.call(gw.server.key, "gpt-vault").status_code == 503))
    r = gw.admin("DELETE", "/admin/endpoints/vault-1/credential")
    assert r.status_code == 404 and r.json()["error"]["code"] == "credential_not_found"


def test_credential_input_is_validated_without_echoing_it(gw: Gateway) -> None:
    r = gw.admin("PUT", "/admin/endpoints/nowhere/credential", json={"api_key": "sk-whatever-000000"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "endpoint_not_found"
    for bad in ("", "sk-has space-123", "sk-new\r\nX-Injected: 1", "ключ-не-ascii", "x" * 5000):
        r = gw.admin("PUT", "/admin/endpoints/vault-1/credential", json={"api_key": bad})
        assert r.status_code == 400 and "api_key" in r.json()["error"]["message"]
        if bad:
            assert bad not in r.text
    for body in ({}, {"api_key": 5}, {"api_key": "sk-aaaaaaaa", "other": 1}):
        r = gw.admin("PUT", "/admin/endpoints/vault-1/credential", json=body)
        assert r.status_code == 400, body
    # A config key wins over a stored one, and says so.
    r = gw.admin("GET", "/admin/endpoints/dead-1/credential")
    assert r.json()["source"] == "config" and r.json()["stored"] is False


# -- usage, logs, status -------------------------------------------------------------------------


def test_usage_and_logs_shapes_and_filters(gw: Gateway) -> None:
    created = gw.admin("POST", "/admin/keys", json={"name": "usage"}).json()
    key, key_id = created["key"], created["key_id"]
    eventually(lambda: gw.everywhere(lambda: gw.accepts(key)))  # GET /api/v1/models: not logged
    ok = [gw.call(key) for _ in range(3)]
    ok.append(gw.call(key, path="/api/v1/stream"))
    missing = gw.call(key, "no-such-model")  # 404: counted as an error, no tokens
    assert all(r.status_code == 200 for r in ok) and missing.status_code == 404
    responses = [r.json() for r in ok[:3]]

    def usage() -> dict[str, Any]:
        body: dict[str, Any] = gw.admin("GET", f"/admin/keys/{key_id}/usage").json()
        return body

    eventually(lambda: usage()["totals"]["requests"] == 5)
    u = usage()
    assert set(u) == {"key_id", "totals", "by_model", "by_day"} and u["key_id"] == key_id
    fields = {
        "requests", "errors", "input_tokens", "output_tokens", "cached_tokens",
        "cache_creation_tokens", "reasoning_tokens", "cost", "cost_micro_dollars",
    }  # fmt: skip
    assert set(u["totals"]) == fields
    assert set(u["by_model"]) == {"mock-1", "no-such-model"}
    assert (
        u["by_model"]["no-such-model"]["errors"] == 1 and u["by_model"]["no-such-model"]["input_tokens"] == 0
    )
    assert u["totals"]["errors"] == 1
    (day,) = u["by_day"]
    assert u["by_day"][day] == u["totals"]
    micro = u["totals"]["cost_micro_dollars"]
    assert u["totals"]["cost"] == f"{micro / 1e6:.6f}".rstrip("0").rstrip(".")
    since = gw.admin("GET", f"/admin/keys/{key_id}/usage", params={"since": "2999-01-01"}).json()
    assert since["totals"]["requests"] == 0 and since["by_day"] == {}
    assert gw.admin("GET", f"/admin/keys/{key_id}/usage", params={"since": "yesterday"}).status_code == 400

    logs = gw.admin("GET", "/admin/logs", params={"key_id": key_id, "limit": 100}).json()
    assert logs["total"] == 5 == len(logs["logs"])
    entry = next(e for e in logs["logs"] if e["request_id"] == responses[0]["id"])
    assert entry["status"] == "success" and entry["http_status"] == 200
    assert entry["input_tokens"] == responses[0]["input_tokens"]
    assert entry["output_tokens"] == responses[0]["output_tokens"]
    assert entry["cost_micro_dollars"] == responses[0]["cost_micro_dollars"]
    assert entry["model"] == "mock-1" and entry["provider"] == "mock" and entry["endpoint_id"] == "mock-local"
    assert {"request_id", "key_id", "model", "provider", "endpoint_id", "status", "http_status",
            "input_tokens", "output_tokens", "cost", "latency_ms", "created_at"} <= set(entry)  # fmt: skip
    # The routing decision: one mock endpoint, a short prompt (no cache value).
    assert (entry["route_reason"], entry["cache_value_usd"], entry["cost_penalty_usd"]) == (
        "least_used",
        0,
        0,
    )
    created_at = [e["created_at"] for e in logs["logs"]]
    assert created_at == sorted(created_at, reverse=True)  # newest first

    def count(**params: Any) -> int:
        r = gw.admin("GET", "/admin/logs", params={"key_id": key_id, **params})
        assert r.status_code == 200, r.text
        total: int = r.json()["total"]
        return total

    assert count(status="error") == 1 and count(status="404") == 1 and count(status="success") == 4
    assert count(model="no-such-model") == 1 and count(provider="mock") == 4
    assert count(since="2999-01-01T00:00:00Z") == 0 and count(since=created_at[-1]) == 5
    page = gw.admin("GET", "/admin/logs", params={"key_id": key_id, "limit": 2, "offset": 2}).json()
    assert [e["request_id"] for e in page["logs"]] == [e["request_id"] for e in logs["logs"][2:4]]
    for bad in ({"status": "great"}, {"since": "soon"}, {"limit": "-5"}, {"modle": "x"}):
        r = gw.admin("GET", "/admin/logs", params=bad)
        assert r.status_code == 400 and next(iter(bad)) in r.json()["error"]["message"], bad


def test_status_reports_providers_backends_and_the_request_log(gw: Gateway) -> None:
    r = gw.admin("GET", "/admin/status")
    assert r.status_code == 200, r.text
    s = r.json()
    assert set(s["providers"]) == {"mock", "vault", "dead"}
    mock = s["providers"]["mock"]
    assert mock["health"] == "healthy" and mock["endpoints"][0]["reachability"] == {"state": "local"}
    vault_ep = s["providers"]["vault"]["endpoints"][0]
    assert vault_ep["id"] == "vault-1" and vault_ep["reachability"]["state"] == "reachable"
    dead_ep = s["providers"]["dead"]["endpoints"][0]
    assert dead_ep["reachability"]["state"] == "unreachable" and dead_ep["credential"] == "config"
    for ep in (vault_ep, dead_ep):
        assert {
            "in_flight",
            "cooling_down",
            "rpm_limit",
            "tpm_limit",
            "available",
            "utilisation",
            "rate_limits",
        } <= set(ep)
        assert "sk-" not in str(ep)
    for backend in ("redis", "s3"):  # neither is configured here
        assert s[backend]["configured"] is False and isinstance(s[backend]["state"], str)
    rl = s["request_log"]
    assert rl["capacity"] == 65536 and rl["dropped"] == 0 and rl["when_full"] == "drop_oldest"
    assert rl["flush_interval_ms"] == 200 and rl["buffered"] >= 0 and rl["written"] >= 0
    assert s["affinity"]["enabled"] is True
    assert ADMIN not in r.text and "sk-dead-endpoint" not in r.text


def test_a_malformed_previous_encryption_key_stops_serve_with_exit_2(tmp_path: Path) -> None:
    (tmp_path / "ensemble.yaml").write_text(f"database: {{path: {tmp_path / 'e.db'}}}\n")
    env = {
        **os.environ,
        "ENSEMBLE_ENCRYPTION_KEY_PREVIOUS": "not-a-key",
        "ENSEMBLE_ENVIRONMENT": "development",
    }
    out = subprocess.run(
        [str(BIN / "ensemble"), "serve", "--config", str(tmp_path / "ensemble.yaml")],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert out.returncode == 2 and "ENSEMBLE_ENCRYPTION_KEY_PREVIOUS" in out.stderr
