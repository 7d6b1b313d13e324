"""Hostile input on every route: hundreds of malformed requests, no 5xx, and the server stays healthy.

Each route gets bad JSON, wrong types, huge numbers, invalid UTF-8, deep nesting and oversized bodies
with valid credentials (so the parsers, not the auth check, see them), path ids built for traversal,
injection and encoding tricks, and raw-socket requests no HTTP library would send: invalid UTF-8 in
request lines and headers, bare CR/LF, oversized headers, contradictory lengths.
"""

from __future__ import annotations

import collections
import random
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from ensemble.server import admin, inference, info
from ensemble.server.app import ROUTES as ALL_ROUTES
from support.ensemble import MOCK_PROVIDER, Ensemble
from support.processes import worker_pids
from support.waiting import wait_until

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


# -- make fuzz-http: thousands of hostile requests over every route of the dispatcher -----------

FUZZ_HTTP_MIN = 2_000
HANG_S = 10.0  # an answer slower than this is a hang
HELLO = [{"role": "user", "content": "hi"}]
TEMPLATES: dict[str, dict[str, Any]] = {
    "native": {"model": "mock-1", "messages": HELLO, "max_tokens": 5},
    "openai": {"model": "mock-1", "messages": HELLO, "max_tokens": 5},
    "anthropic": {"model": "mock-1", "max_tokens": 5, "messages": HELLO},
    "gemini": {"contents": [{"parts": [{"text": "hi"}]}], "generationConfig": {"maxOutputTokens": 5}},
    "admin": {"name": "fuzz", "rate_limit_rpm": 10, "api_key": "x", "status": "active"},
    "batch": {"requests": [{"custom_id": "a", "model": "mock-1", "messages": HELLO}]},
}
HOSTILE_VALUES: list[Any] = [
    None, "", "x" * 20_000, -1, 0, orjson.Fragment(b"18446744073709551616"), orjson.Fragment(b"-1e400"),
    1.5e308, [], {}, True, "\u0000\u202e",
    [None] * 500, {"$gt": ""}, "../../etc/passwd", "ens_" + "A" * 40, "\r\nX-Injected: 1",
]  # fmt: skip
HOSTILE_HEADERS: list[dict[str, str]] = [
    {"content-type": "text/plain"},
    {"content-type": "application/json; charset=utf-16"},
    {"content-encoding": "gzip"},
    {"x-request-id": "a" * 129},
    {"x-request-id": "../../x"},
    {"x-ensemble-session": "s" * 5000},
    {"anthropic-beta": "x" * 10_000},
    {"accept": "*/*;q=" + "9" * 400},
    {"authorization": "Bearer"},
    {"authorization": "Basic " + "Zm9vOmJhcg=="},
    {"authorization": "Bearer " + "x" * 8000},
    {"x-api-key": "ens_wrong"},
    {"expect": "100-continue"},
    {"range": "bytes=0-1,2-3"},
]


# Raw requests no HTTP library sends (smuggling shapes, bad framing), per POST route; each with a
# complete body so a server that accepts it answers at once. 0 in the counts: closed without answer.
RAW_TEMPLATES: list[bytes] = [
    b"POST %(path)s HTTP/1.1\r\nHost: x\r\n%(auth)s\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST %(path)s HTTP/1.1\r\nHost: x\r\n%(auth)s\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    b"POST %(path)s HTTP/1.1\r\nHost: x\r\n%(auth)s\r\nTransfer-Encoding: gzip\r\n\r\n{}",
    b"POST %(path)s HTTP/1.1\r\nHost: x\r\n%(auth)s\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
    b"POST %(path)s HTTP/1.1\r\nHost: x\r\n%(auth)s\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\n{}\r\n0\r\n\r\n",
    b"POST %(path)s HTTP/1.1\r\nHost: x\r\n%(auth)s\r\nTransfer-Encoding: chunked\r\n\r\n-2\r\n{}\r\n0\r\n\r\n",
    b"POST %(path)s HTTP/1.1\r\nHost: x\r\n%(auth)s\r\nX-Folded: a\r\n b\r\nContent-Length: 2\r\n\r\n{}",
    b"POST %(path)s HTTP/1.1\nHost: x\n%(auth)s\nContent-Length: 2\n\n{}",
    b"POST %(path)s HTTP/1.1\r\nHost: x\r\n%(auth)s\r\nX-Nul: a\x00b\r\nContent-Length: 2\r\n\r\n{}",
    b"POST http://evil.example%(path)s HTTP/1.1\r\nHost: x\r\n%(auth)s\r\nContent-Length: 2\r\n\r\n{}",
    b"POST %(path)s HTTP/1.1\r\n%(auth)s\r\nContent-Length: 2\r\n\r\n{}",
    b"POST %(path)s HTTP/1.0\r\n%(auth)s\r\nContent-Length: 2\r\n\r\n{}",
    b"POST %(path)s#frag HTTP/1.1\r\nHost: x\r\n%(auth)s\r\nContent-Length: 2\r\n\r\n{}",
    b"POST %(path)s HTTP/1.1\r\nHost: x\r\n%(auth)s\r\nContent-Length: 2\r\n\r\n{}GET /health HTTP/1.1\r\nHost: x\r\n\r\n",
]  # fmt: skip


def template_for(route: Any) -> dict[str, Any]:
    if "/batch" in route.path:
        if route.family == "anthropic":
            return {"requests": [{"custom_id": "a", "params": TEMPLATES["anthropic"]}]}
        return TEMPLATES["batch"]
    return TEMPLATES[route.family]


def hostile_bodies(template: dict[str, Any]) -> Iterator[bytes]:
    """Each top-level field replaced by each hostile value, dropped, and nested one level down."""
    for field in template:
        for value in HOSTILE_VALUES:
            yield orjson.dumps({**template, field: value})
        yield orjson.dumps({k: v for k, v in template.items() if k != field})
    yield orjson.dumps({**template, "unknown_field": HOSTILE_VALUES})
    yield orjson.dumps([template] * 3)
    yield orjson.dumps(template)[:-1]  # cut short


def test_fuzz_http_thousands_of_hostile_requests_over_every_route_family(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """`make fuzz-http`: at least 2,000 hostile requests over every route (native, OpenAI, Anthropic,
    Gemini, batch, admin, UI, metrics) on two workers, several clients at once on keep-alive
    connections. Fails on any 5xx, an answer slower than 10 s, a request left unanswered, a worker
    restart or a crash. Prints the counts (README, docs/security.md)."""
    srv = Ensemble(
        Path(tmp_path_factory.mktemp("fuzz-http")),
        providers=[MOCK_PROVIDER],
        config={"server": {"max_request_bytes": MAX_BODY}},
        env={"ENSEMBLE_ADMIN_KEY": ADMIN},
        workers=2,
    )
    try:
        wait_until(lambda: len(worker_pids(srv.process)) == 2, what="two workers")
        pids = worker_pids(srv.process)
        jobs: list[tuple[str, str, bytes, dict[str, str]]] = []
        rng = random.Random(17)
        for route in ALL_ROUTES:
            path = fill(route.path, "key_0" if "key" in route.path else "mock-1")
            auth = credentials(path, srv.key)
            base = {"content-type": "application/json", **auth}
            template = template_for(route) if route.method in ("POST", "PUT") else {"name": "x"}
            for body in hostile_bodies(template):
                jobs.append((route.method, path, body, base))
            for extra in HOSTILE_HEADERS:
                jobs.append((route.method, path, orjson.dumps(template), {**base, **extra}))
            for value in IDS if "{" in route.path else ():
                jobs.append((route.method, fill(route.path, value), orjson.dumps(template), base))
            for method in ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"):
                jobs.append((method, path, b"{}", base))
            for _ in range(3):
                junk = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 2000)))
                jobs.append((route.method, path, junk, base))
            jobs.append((route.method, path + "?" + "&".join(["a=%ff%00"] * 200), b"{}", base))

        statuses: collections.Counter[int] = collections.Counter()
        failures: list[str] = []
        slowest = 0.0
        lock = threading.Lock()

        def run(chunk: list[tuple[str, str, bytes, dict[str, str]]]) -> None:
            nonlocal slowest
            with httpx.Client(base_url=srv.url, timeout=HANG_S) as c:
                for method, path, body, headers in chunk:
                    t0 = time.monotonic()
                    label = f"{method} {path[:80]} {body[:40]!r} {list(headers)[-1]}"
                    try:
                        status = c.request(method, path, content=body, headers=headers).status_code
                    except httpx.TimeoutException:
                        status, label = 0, label + ": no answer within 10 s"
                    except httpx.HTTPError as e:
                        status, label = 0, f"{label}: {type(e).__name__} {e}"
                    elapsed = time.monotonic() - t0
                    with lock:
                        statuses[status] += 1
                        slowest = max(slowest, elapsed)
                        if status == 0 or status >= 500:
                            failures.append(f"{label}: {status}")

        raw_jobs = [
            template % {b"path": path.encode(), b"auth": f"Authorization: Bearer {srv.key}".encode()}
            for path in {fill(r.path, "mock-1") for r in ALL_ROUTES if r.method == "POST"}
            for template in RAW_TEMPLATES
        ]
        rng.shuffle(jobs)
        lanes = 4
        t0 = time.monotonic()
        with ThreadPoolExecutor(lanes) as pool:
            list(pool.map(run, [jobs[i::lanes] for i in range(lanes)]))
        for request in raw_jobs:  # each on a connection of its own; None: the server closed it
            t1 = time.monotonic()
            status = raw(srv.port, request)
            slowest = max(slowest, time.monotonic() - t1)
            statuses[status or 0] += 1
            if status is not None and status >= 500:
                failures.append(f"raw {request[:80]!r}: {status}")
        took = time.monotonic() - t0
        print(
            f"\nfuzz-http: {len(jobs) + len(raw_jobs)} hostile requests ({len(raw_jobs)} raw) over {len(ALL_ROUTES)} routes in {took:.1f} s, "
            f"slowest answer {slowest * 1000:.0f} ms, statuses {dict(sorted(statuses.items()))}, "
            f"failures {len(failures)}"
        )
        assert len(jobs) + len(raw_jobs) >= FUZZ_HTTP_MIN
        assert not failures, "\n".join(failures[:30])
        assert slowest < HANG_S
        assert srv.process.proc.poll() is None
        assert worker_pids(srv.process) == pids, "a worker was restarted"
        output = srv.process.output()
        assert "unhandled error" not in output and "Traceback" not in output, output[-3000:]
        with srv.client() as c:
            assert c.post("/api/v1/generate", json=TEMPLATES["native"]).status_code == 200
    finally:
        srv.stop()
