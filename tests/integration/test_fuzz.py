"""Hostile input on every route: hundreds of malformed requests, no 5xx, and the server stays healthy.

Each route gets bad JSON, wrong types, huge numbers, invalid UTF-8, deep nesting and oversized bodies
with valid credentials (so the parsers, not the auth check, see them), path ids built for traversal,
injection and encoding tricks, and raw-socket requests no HTTP library would send: invalid UTF-8 in
request lines and headers, bare CR/LF, oversized headers, contradictory lengths.
"""

from __future__ import annotations

import random
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ensemble.server import admin, inference, info
from support.ensemble import MOCK_PROVIDER, Ensemble

pytestmark = pytest.mark.integration

ADMIN = "adm_" + secrets.token_urlsafe(24)
MAX_BODY = 256 * 1024
ROUTES = [(r.method, r.path) for r in inference.ROUTES + info.ROUTES + admin.ROUTES]

IDS = [
    "key_0",
    "..",
    "..%2F..%2Fetc%2Fpasswd",
    "%2e%2e%2f%2e%2e",
    "a" * 300,
    "%00",
    "%ff%fe",
    "x%0d%0aX-Injected:%201",
    "'%3B%20DROP%20TABLE%20api_keys%3B--",
    "%D0%BA%D0%BB%D1%8E%D1%87",
    "mock-local%2F..%2Fmock-local",
]

BODIES: list[bytes] = [
    b"",
    b"{",
    b"null",
    b"[]",
    b'"string"',
    b"123456789012345678901234567890",
    b'{"name": 1, "model": 2, "messages": 3}',
    b'{"name": "x", "rate_limit_rpm": 1e309}',
    b'{"name": "x", "rate_limit_rpm": 99999999999999999999999999}',
    b'{"name": "x", "rate_limit_tpm": -99999999999999999999}',
    b'{"name": "\xff\xfe", "model": "\xc3\x28"}',
    b'{"api_key": "\xed\xa0\x80"}',
    b"[" * 50_000 + b"]" * 50_000,
    b'{"a":' * 5_000 + b"1" + b"}" * 5_000,
    b'{"model": "mock-1", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1e400}',
    b'{"model": "mock-1", "messages": [{"role": "user", "content": {"$ne": 1}}], "temperature": "hot"}',
    b'{"name": "x", "allowed_models": [1, null, {}]}',
    b'{"status": "revoked"}',
    b'{"email": ["a@b"], "name": null}',
    b'{"api_key": "sk-\\r\\nX-Injected: 1"}',
    b"\x00\x01\x02\x03",
    b'{"model": "mock-1", "messages": [], "stream": "yes"}',
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ensemble]:
    srv = Ensemble(
        Path(tmp_path_factory.mktemp("fuzz")),
        providers=[MOCK_PROVIDER],
        config={"server": {"max_request_bytes": MAX_BODY}},
        env={"ENSEMBLE_ADMIN_KEY": ADMIN},
    )
    yield srv
    srv.stop()


def credentials(path: str, key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {ADMIN if path.startswith('/admin') else key}"}


def fill(path: str, value: str) -> str:
    out = path
    while "{" in out:
        start, end = out.index("{"), out.index("}")
        out = out[:start] + value + out[end + 1 :]
    return out


def send(base_url: str, method: str, path: str, content: Any, headers: dict[str, str]) -> int | None:
    """On a connection of its own: the server may refuse (413) and close before the body is sent, and
    a shared pool must not keep that connection for the next request."""
    try:
        with httpx.Client(base_url=base_url, timeout=30) as c:
            return c.request(method, path, content=content, headers=headers).status_code
    except (httpx.RemoteProtocolError, httpx.WriteError, httpx.ReadError):
        return None


def raw(port: int, request: bytes) -> int | None:
    """Send bytes as they are; the status code, or None when the server just closed the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        data = b""
        try:
            while b"\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        except (ConnectionResetError, TimeoutError):
            return None
    if not data:
        return None
    return int(data.split(b" ", 2)[1])


def test_hostile_requests_on_every_route_get_4xx_and_the_server_stays_up(server: Ensemble) -> None:
    rng = random.Random(7)
    sent = 0
    failures: list[str] = []

    def check(label: str, status: int | None) -> None:
        nonlocal sent
        sent += 1
        if status is not None and status >= 500:
            failures.append(f"{label}: {status}")

    def exchange(c: httpx.Client, method: str, path: str, **kw: Any) -> int:
        """One request and its status on the shared keep-alive connection: the server reads (or
        drains) every body it answers without, so no request on it may go unanswered."""
        try:
            return c.request(method, path, **kw).status_code
        except httpx.RemoteProtocolError as e:
            failures.append(f"{method} {path}: no response ({e})")
            return 0

    with httpx.Client(base_url=server.url, timeout=30) as c:
        for method, template in ROUTES:
            path = fill(template, "key_0")
            for body in BODIES:
                headers = {"content-type": "application/json", **credentials(path, server.key)}
                check(
                    f"{method} {path} {body[:40]!r}", exchange(c, method, path, content=body, headers=headers)
                )
            # Oversized: declared and chunked (no content-length).
            # The server may answer 413 and close before the client finished sending: no status then.
            big = b'{"name": "' + b"x" * (MAX_BODY + 10) + b'"}'
            check(
                f"{method} {path} oversized",
                send(server.url, method, path, big, credentials(path, server.key)),
            )
            parts = iter([big[:100_000], big[100_000:]])
            check(
                f"{method} {path} oversized chunked",
                send(server.url, method, path, parts, credentials(path, server.key)),
            )
            # Random garbage bytes.
            junk = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
            check(
                f"{method} {path} junk",
                exchange(c, method, path, content=junk, headers=credentials(path, server.key)),
            )
            if "{" in template:
                for value in IDS:
                    hostile = fill(template, value)
                    status = exchange(
                        c, method, hostile, json={"name": "x"}, headers=credentials(hostile, server.key)
                    )
                    check(f"{method} {hostile}", status)
        for query in ("limit=%ff%fe", "status=%00", "since=9999999999999999999", "limit=1&limit=2",
                      "offset=" + "9" * 40, "model=" + "%C3%28" * 50, "&&&==&", "since=2025-13-45"):  # fmt: skip
            for path in ("/admin/logs", "/admin/keys", "/admin/customers", "/admin/keys/key_0/usage"):
                check(
                    f"GET {path}?{query}",
                    exchange(c, "GET", f"{path}?{query}", headers=credentials(path, server.key)),
                )
        for method in ("PATCH", "OPTIONS", "TRACE", "DELETE"):
            check(
                f"{method} /admin/keys",
                exchange(c, method, "/admin/keys", headers=credentials("/admin", "")),
            )

        # An encoded CR LF in an id never turns into a response header.
        for path in ("/admin/keys/x%0d%0aX-Injected:%201/config", "/api/v1/status/x%0d%0aX-Injected:%201"):
            r = c.get(path, headers={**credentials(path, server.key), "x-request-id": "fuzz-injection"})
            assert r.status_code in (400, 404) and "x-injected" not in r.headers
            assert r.headers["x-request-id"] == "fuzz-injection"

    port = server.port
    auth = f"Authorization: Bearer {ADMIN}\r\n".encode()
    raw_requests = [
        b"GET /admin/keys/\xff\xfe/config HTTP/1.1\r\nHost: x\r\n" + auth + b"\r\n",
        b"GET /admin/logs?model=\xff HTTP/1.1\r\nHost: x\r\n" + auth + b"\r\n",
        b"GET /admin/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\xfd\r\n\r\n",
        b"GET /admin/status HTTP/1.1\r\nHost: x\r\nX-Request-ID: \xc3\x28\r\n" + auth + b"\r\n",
        b"GET /admin/status HTTP/1.1\r\nHost: x\r\nX-Request-ID: a\rInjected: 1\r\n" + auth + b"\r\n",
        b"GET /admin/status HTTP/1.1\r\nHost: x\r\nX-Request-ID: a\nInjected: 1\r\n" + auth + b"\r\n",
        b"GET /admin/status HTTP/1.1\r\nHost: x\r\nBad Header Name: 1\r\n" + auth + b"\r\n",
        b"GET /admin/status HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000 + b"\r\n" + auth + b"\r\n",
        b"GET /admin/status HTTP/1.1\r\nHost: x\r\n"
        + b"".join(b"X-%d: 1\r\n" % i for i in range(2000))
        + auth
        + b"\r\n",
        b"POST /admin/keys HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n" + auth + b"\r\n",
        b"POST /admin/keys HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n"
        + auth
        + b"\r\n{}",
        b"POST /admin/keys HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n"
        + auth
        + b"\r\n0\r\n\r\n",
        b"POST /admin/keys HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        + auth
        + b"\r\nzz\r\nhello\r\n0\r\n\r\n",
        b"POST /api/v1/generate HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nAuthorization: Bearer "
        + server.key.encode()
        + b'\r\n\r\n{"mod',
        b"GET /../../../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /admin/%2e%2e/%2e%2e/etc/passwd HTTP/1.1\r\nHost: x\r\n" + auth + b"\r\n",
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64),  # a TLS ClientHello on plain HTTP
    ]
    for i, request in enumerate(raw_requests):
        status = raw(port, request)
        check(f"raw #{i} {request[:60]!r}", status)

    assert sent >= 200, sent
    assert not failures, "\n".join(failures[:30])
    assert httpx.get(f"{server.url}/health", timeout=5).status_code == 200
    assert server.process.proc.poll() is None
    output = server.process.output()
    assert "unhandled error" not in output and "Traceback" not in output, output[-3000:]
    # And it still does its job.
    with server.client() as c:
        assert (
            c.post(
                "/api/v1/generate", json={"model": "mock-1", "messages": [{"role": "user", "content": "ok"}]}
            ).status_code
            == 200
        )
    assert (
        httpx.get(f"{server.url}/admin/status", headers={"authorization": f"Bearer {ADMIN}"}).status_code
        == 200
    )
