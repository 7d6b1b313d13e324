"""Planted secrets never leak: not in log lines, error bodies, admin responses or the database file.

A provider key is stored through the admin API (no recognisable prefix, so only the registry of known
secrets can mask it), another sits in the config, a client key is created through the admin API, and
the upstream is told to echo keys back in its error messages, the way OpenAI's 401 does. Afterwards
the server's whole stderr, every response body and the SQLite files (with WAL) are searched.
"""

from __future__ import annotations

import secrets
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.ensemble import Ensemble, openai_provider
from support.fake import FakeUpstream

pytestmark = pytest.mark.integration

ADMIN = "adm_" + secrets.token_urlsafe(24)
STORED = "planted" + secrets.token_hex(20)  # deliberately shaped like no known provider key
CONFIGURED = "sk-cfg" + secrets.token_hex(20)
HELLO = [{"role": "user", "content": "hello"}]


class World:
    def __init__(self, server: Ensemble, fake: FakeUpstream, client_key: str, key_id: str) -> None:
        self.server = server
        self.fake = fake
        self.client_key = client_key
        self.key_id = key_id
        self.bodies: list[str] = []  # every response body and header block the tests saw

    def keep(self, r: httpx.Response) -> httpx.Response:
        self.bodies.append(r.text)
        self.bodies.append(str(dict(r.headers)))
        return r

    def admin(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return self.keep(
            httpx.request(
                method, self.server.url + path, headers={"authorization": f"Bearer {ADMIN}"}, timeout=30, **kw
            )
        )

    def call(self, path: str = "/api/v1/generate", key: str | None = None, **body: Any) -> httpx.Response:
        payload = {"model": "gpt-vault", "messages": HELLO, **body}
        return self.keep(
            httpx.post(
                self.server.url + path,
                json=payload,
                headers={"authorization": f"Bearer {key or self.client_key}"},
                timeout=30,
            )
        )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    fake = FakeUpstream()
    providers = [
        openai_provider(
            fake.endpoint_url("vault"), name="vault", models=["gpt-vault"], endpoints=[{"id": "vault-1"}]
        ),
        openai_provider(
            fake.endpoint_url("cfg"),
            name="cfg",
            models=["gpt-cfg"],
            endpoints=[{"id": "cfg-1", "api_key": CONFIGURED}],
        ),
    ]
    server = Ensemble(
        Path(tmp_path_factory.mktemp("secrets")),
        providers=providers,
        env={"ENSEMBLE_ADMIN_KEY": ADMIN},
        config={"logging": {"level": "debug"}},  # the chattiest setting: more lines to leak into
    )
    created = httpx.post(
        server.url + "/admin/keys", json={"name": "planted"}, headers={"authorization": f"Bearer {ADMIN}"}
    ).json()
    w = World(server, fake, created["key"], created["key_id"])
    fake.configure("vault", require_api_key=STORED, chunks=5)
    fake.configure("cfg", require_api_key=CONFIGURED, chunks=5)
    yield w
    server.stop()
    fake.stop()


def plant_credential(world: World) -> None:
    """Store the vault endpoint's key through the admin API and wait until requests use it."""
    r = world.admin("PUT", "/admin/endpoints/vault-1/credential", json={"api_key": STORED})
    assert r.status_code == 200
    deadline = time.monotonic() + 3
    while world.call().status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_the_planted_credentials_work(world: World) -> None:
    plant_credential(world)
    assert world.call(path="/api/v1/stream").status_code == 200
    assert world.call(model="gpt-cfg").status_code == 200


def test_upstream_errors_echoing_a_key_are_masked(world: World) -> None:
    plant_credential(world)  # so the test also stands alone (-k, random order)
    echo = f"Incorrect API key provided: {STORED}. You can find your API key at ..."
    world.fake.enqueue("vault", {"status": 401, "message": echo})
    r = world.call()
    assert r.status_code == 502 and "Incorrect API key provided" in r.text
    world.fake.enqueue("vault", {"status": 400, "message": f"bad request for key {STORED}"})
    r = world.call()
    assert r.status_code == 400 and "bad request for key" in r.text  # other 4xx pass through, masked
    world.fake.enqueue("vault", {"error_event_after_chunks": 2, "message": f"stream broke; key {STORED}"})
    r = world.call(path="/api/v1/stream")
    assert r.status_code == 200 and "event: error" in r.text
    world.fake.enqueue("vault", {"error_event_after_chunks": 1, "message": f"key {STORED}"})
    r = world.call(path="/v1/chat/completions", stream=True)
    assert r.status_code in (200, 502)  # 502 when the error came before any content
    world.fake.enqueue("cfg", {"status": 401, "message": f"Incorrect API key provided: {CONFIGURED}"})
    assert world.call(model="gpt-cfg").status_code == 502
    world.fake.enqueue("cfg", {"status": 422, "message": f"key {CONFIGURED} is not allowed"})
    assert world.call(model="gpt-cfg", path="/v1/chat/completions").status_code == 422


def test_fragments_of_a_key_echoed_by_an_upstream_are_masked(world: World) -> None:
    """An upstream that echoes the key in two halves, or only a piece of it: every 8-character run
    of a known secret is masked (the last test checks every body and the log for all of them)."""
    plant_credential(world)
    half = len(STORED) // 2
    echoes = [
        f"key begins {STORED[:half]} and ends {STORED[half:]}",
        f"key '{STORED[5:17]}…' rejected",
        f"{CONFIGURED[:10]}-{CONFIGURED[10:]}",
    ]
    for endpoint, model, message in (
        ("vault", None, echoes[0]),
        ("vault", None, echoes[1]),
        ("cfg", "gpt-cfg", echoes[2]),
    ):
        world.fake.enqueue(endpoint, {"status": 400, "message": message})
        r = world.call(**({"model": model} if model else {}))
        assert r.status_code == 400 and "…redacted" in r.text, r.text
        assert not any(w in r.text for w in windows(STORED) | windows(CONFIGURED)), r.text


def windows(secret: str, size: int = 8) -> set[str]:
    return {secret[i : i + size] for i in range(len(secret) - size + 1)}


def test_client_keys_sent_in_odd_places_are_not_echoed(world: World) -> None:
    key = world.client_key
    assert world.call(model=key).status_code == 404  # "model '…' is not served"
    r = world.keep(
        httpx.get(f"{world.server.url}/api/v1/status/{key}", headers={"authorization": f"Bearer {key}"})
    )
    assert r.status_code == 404
    assert world.keep(httpx.get(f"{world.server.url}/api/v1/{key}")).status_code == 404
    assert world.call(key=key[:-1] + ("A" if key[-1] != "A" else "B")).status_code == 401
    assert world.call(key=key + "x").status_code == 401
    r = world.keep(
        httpx.post(
            f"{world.server.url}/api/v1/generate",
            json={"model": "gpt-vault", "messages": HELLO},
            headers={"authorization": f"Bearer {key}", "x-request-id": key},
        )
    )
    assert r.status_code == 400 and "X-Request-ID" in r.text
    r = world.keep(httpx.post(f"{world.server.url}/api/v1/generate", content=f'{{"model": "{key}"'))
    assert r.status_code == 401
    r = world.call(messages=[{"role": key, "content": "x"}])
    assert r.status_code == 400
    r = world.keep(
        httpx.post(
            f"{world.server.url}/api/v1/generate",
            content=f'{{"model": "{key}", "messages": 5}}',
            headers={"authorization": f"Bearer {key}"},
        )
    )
    assert r.status_code == 400
    # Admin key in the wrong places.
    r = world.keep(httpx.get(f"{world.server.url}/admin/keys", headers={"authorization": f"Bearer {ADMIN}0"}))
    assert r.status_code == 401
    r = world.call(key=ADMIN)
    assert r.status_code == 401


def test_tampered_ciphertext_is_refused_and_the_endpoint_becomes_unavailable(world: World) -> None:
    db = sqlite3.connect(world.server.dir / "data" / "ensemble.db", timeout=10)
    try:
        ciphertext, nonce, version = db.execute(
            "SELECT ciphertext, nonce, key_version FROM provider_credentials WHERE endpoint_id = 'vault-1'"
        ).fetchone()
        # A valid ciphertext moved to another endpoint's row: the endpoint id is authenticated data.
        db.execute(
            "INSERT INTO provider_credentials VALUES ('cfg-1', ?, ?, ?, 'x', '2025-01-01T00:00:00Z')",
            (ciphertext, nonce, version),
        )
        # One flipped bit in vault-1's own ciphertext (with a changed nonce, so servers reload it).
        flipped = bytes([ciphertext[0] ^ 1]) + ciphertext[1:]
        db.execute(
            "UPDATE provider_credentials SET ciphertext = ?, nonce = ? WHERE endpoint_id = 'vault-1'",
            (flipped, bytes([nonce[0] ^ 1]) + nonce[1:]),
        )
        db.commit()
    finally:
        db.close()
    deadline = time.monotonic() + 3
    while world.call().status_code != 503:
        assert time.monotonic() < deadline, "tampered credential still in use"
        time.sleep(0.05)
    view = world.admin("GET", "/admin/endpoints/vault-1/credential").json()
    assert view["source"] == "none" and "failed authentication" in view["error"]
    moved = world.admin("GET", "/admin/endpoints/cfg-1/credential").json()
    assert "failed authentication" in moved["error"] and moved["source"] == "config"
    assert world.call(model="gpt-cfg").status_code == 200  # its config key is unaffected
    status = world.admin("GET", "/admin/status").json()
    assert status["providers"]["vault"]["endpoints"][0]["available"] is False
    # Setting it again recovers.
    assert (
        world.admin("PUT", "/admin/endpoints/vault-1/credential", json={"api_key": STORED}).status_code == 200
    )
    assert world.call().status_code == 200


def test_no_secret_in_logs_bodies_admin_responses_or_the_database(world: World) -> None:
    for path in (
        "/admin/logs?limit=1000",
        "/admin/keys",
        f"/admin/keys/{world.key_id}/config",
        f"/admin/keys/{world.key_id}/usage",
        "/admin/status",
        "/admin/endpoints/vault-1/credential",
        "/admin/endpoints/cfg-1/credential",
    ):
        assert world.admin("GET", path).status_code == 200
    logs = world.admin("GET", "/admin/logs?limit=1000").json()["logs"]
    assert any("Incorrect API key provided" in (e["error"] or "") for e in logs)  # the errors were logged
    assert world.server.stop() == 0  # SIGTERM: flush everything to the database
    output = world.server.process.output()
    assert "stored credential refused" in output and "Incorrect API key provided" in output
    data = world.server.dir / "data"
    files = {p.name: p.read_bytes() for p in data.iterdir() if p.name.startswith("ensemble.db")}
    assert "ensemble.db" in files
    client = world.client_key
    planted = {
        "stored provider key": STORED,
        "configured provider key": CONFIGURED,
        "client key": client,
        "client key (beyond its listed prefix)": client[12:],
        "admin key": ADMIN,
        "stored key's middle": STORED[4:-4],
    }
    for label, secret in (("stored provider key", STORED), ("configured provider key", CONFIGURED)):
        for piece in windows(secret):
            assert piece not in output, f"8 characters of the {label} in the server's log"
            for i, body in enumerate(world.bodies):
                assert piece not in body, f"8 characters of the {label} in response #{i}: {body[:300]}"
    for label, secret in planted.items():
        assert secret not in output, f"{label} in the server's log"
        for i, body in enumerate(world.bodies):
            assert secret not in body, f"{label} in response #{i}: {body[:300]}"
        for name, content in files.items():
            assert secret.encode() not in content, f"{label} in {name}"
