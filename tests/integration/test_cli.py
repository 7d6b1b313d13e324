"""The command line as an operator runs it."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
from pathlib import Path

import pytest

from ensemble.ready_notice import RULE
from ensemble.storage import database
from support.processes import BIN, ROOT
from support.waiting import wait_until

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).parent.parent / "fixtures" / "config"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "ensemble"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


def test_config_check_ok_and_bad() -> None:
    ok = run("config", "check")
    assert ok.returncode == 0 and "config/ensemble.yaml: OK" in ok.stdout and "mock [mock]" in ok.stdout
    bad = run("config", "check", "--config", str(FIXTURES / "bad_types" / "ensemble.yaml"))
    assert bad.returncode == 1
    assert "server.port" in bad.stderr and "rate_limit.window_size" in bad.stderr


def test_version_and_help() -> None:
    v = run("version")
    assert v.returncode == 0 and v.stdout.startswith("ensemble 0.1.0 (native 0.1.0, release build)")
    h = run("--help")
    assert h.returncode == 0 and all(c in h.stdout for c in ("serve", "migrate", "config", "keys", "version"))


def test_production_refuses_to_start_without_secrets(tmp_path: Path) -> None:
    env = {
        "ENSEMBLE_ENVIRONMENT": "production",
        "ENSEMBLE_ENCRYPTION_KEY": "",
        "ENSEMBLE_ADMIN_KEY": "",
        "ENSEMBLE_DATABASE": str(tmp_path / "x.db"),
    }
    r = run("serve", "--port", "5999", env=env)
    assert r.returncode == 2
    assert "ENSEMBLE_ENCRYPTION_KEY" in r.stderr and "ENSEMBLE_ADMIN_KEY" in r.stderr
    r = run(
        "serve",
        "--port",
        "5999",
        env={**env, "ENSEMBLE_ENCRYPTION_KEY": "not-base64!", "ENSEMBLE_ADMIN_KEY": "a"},
    )
    assert r.returncode == 2 and "32 bytes" in r.stderr


def test_keys_create_list_revoke_and_migrate(tmp_path: Path) -> None:
    env = {"ENSEMBLE_DATABASE": str(tmp_path / "k.db")}
    assert f"schema version 0 -> {database.SCHEMA_VERSION}" in run("migrate", env=env).stdout
    assert "schema is current" in run("migrate", env=env).stdout
    created = run("keys", "create", "--name", "ci", "--rpm", "5", "--models", "a,b", env=env)
    key = created.stdout.strip()
    assert created.returncode == 0 and key.startswith("ens_") and len(key) >= 36
    listing = run("keys", "list", env=env)
    assert "ci" in listing.stdout and key not in listing.stdout and key[:12] in listing.stdout
    key_id = listing.stdout.splitlines()[1].split()[0]
    assert run("keys", "revoke", key_id, env=env).returncode == 0
    assert "revoked" in run("keys", "list", env=env).stdout
    assert run("keys", "revoke", "key_nope", env=env).returncode == 1
    # only the digest is stored
    assert key.encode() not in (tmp_path / "k.db").read_bytes()


def test_development_mode_creates_first_key_and_encryption_key(tmp_path: Path) -> None:
    from support.ensemble import Ensemble

    server = Ensemble(tmp_path, key=False)
    try:
        out = wait_until(
            lambda: server.process.output().count(RULE) == 2 and server.process.output(), what="notice"
        )
        assert "A first client API key was created" in out and f"curl -s {server.url}/api/v1/generate" in out
        # Its command for more keys names this (non-default) config, where `keys create` takes it.
        (more,) = re.findall(r"^More keys: (.+)$", out, re.M)
        assert f"keys create --config {server.config_path} --name my-app" in more
        made = subprocess.run(more, shell=True, capture_output=True, text=True, cwd=ROOT, timeout=60)
        assert made.returncode == 0 and made.stdout.startswith("ens_"), made.stderr
        key_file = tmp_path / "data" / "encryption.key"
        assert key_file.stat().st_mode & 0o777 == 0o600
    finally:
        server.stop()


def test_keys_create_returns_once_the_running_server_accepts_the_key(tmp_path: Path) -> None:
    """So that `export ENSEMBLE_KEY=$(ensemble keys create …)` then a request works as pasted."""
    from support.ensemble import Ensemble

    server = Ensemble(tmp_path)
    try:
        key = server.create_key("pasted")
        with server.client(key) as c:
            assert c.get("/api/v1/models").status_code == 200  # at once: no 401 while the server polls
    finally:
        server.stop()


def test_migrate_upgrades_an_existing_request_log(tmp_path: Path) -> None:
    """A database written by the previous schema (version 2, before the routing-decision columns)
    keeps its rows and gains the columns with their defaults."""
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        for version, script in enumerate(database.MIGRATIONS[:2], start=1):
            db.executescript(script)
            db.execute(f"PRAGMA user_version={version}")
        db.execute(
            "INSERT INTO request_log (request_id, key_id, model, status, http_status, created_at) "
            "VALUES ('req_old', 'key_1', 'm', 'success', 200, '2026-01-01T00:00:00.000Z')"
        )
    out = run("migrate", env={"ENSEMBLE_DATABASE": str(path)})
    assert out.returncode == 0, out.stderr
    assert f"schema version 2 -> {database.SCHEMA_VERSION}" in out.stdout
    with sqlite3.connect(path) as db:
        row = db.execute(
            "SELECT request_id, route_reason, cache_value_usd, cost_penalty_usd FROM request_log"
        ).fetchall()
        (version,) = db.execute("PRAGMA user_version").fetchone()
    assert row == [("req_old", "", 0.0, 0.0)]
    assert version == database.SCHEMA_VERSION
