"""`server.idle_timeout` and `server.read_timeout` (see docs/configuration.md) against a real server:
raw sockets that send half a request head, idle on a kept-alive connection, or never finish a body.

The configured values (1 s, 1.5 s) are far below the defaults (120 s, 35 min) and the old hard-coded
30 s, so each check fails unless the setting is what bounds the connection."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.ensemble import MOCK_PROVIDER, Ensemble

pytestmark = pytest.mark.integration

IDLE_S = 1.0
READ_S = 1.5


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ensemble]:
    srv = Ensemble(
        Path(tmp_path_factory.mktemp("timeouts")),
        providers=[MOCK_PROVIDER],
        config={
            "server": {"idle_timeout": f"{int(IDLE_S * 1000)}ms", "read_timeout": f"{int(READ_S * 1000)}ms"}
        },
    )
    yield srv
    srv.stop()


def connect(server: Ensemble) -> socket.socket:
    host, _, port = server.url.removeprefix("http://").partition(":")
    return socket.create_connection((host, int(port)), timeout=10)


def read_to_close(sock: socket.socket, limit: float = 10.0) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took."""
    start = time.monotonic()
    sock.settimeout(limit)
    data = b""
    while True:
        chunk = sock.recv(65536)  # a socket.timeout here fails the test: the server kept it open
        if not chunk:
            return data, time.monotonic() - start
        data += chunk


def test_half_a_request_head_is_closed_after_the_idle_timeout(server: Ensemble) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        _, took = read_to_close(sock)
    assert IDLE_S * 0.8 <= took < IDLE_S + 3, took


def test_an_idle_kept_alive_connection_is_closed_after_the_idle_timeout(server: Ensemble) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        data, took = read_to_close(sock)
    assert data.startswith(b"HTTP/1.1 200"), data[:100]
    assert IDLE_S * 0.8 <= took < IDLE_S + 3, took


def test_a_body_that_never_arrives_gets_408_after_the_read_timeout(server: Ensemble) -> None:
    with connect(server) as sock:
        sock.sendall(
            b"POST /api/v1/generate HTTP/1.1\r\nHost: x\r\n"
            + f"Authorization: Bearer {server.key}\r\n".encode()
            + b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
            + b'{"model": '
        )
        start = time.monotonic()
        sock.settimeout(10)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(65536)
            assert chunk, head
            head += chunk
        took = time.monotonic() - start
    assert head.startswith(b"HTTP/1.1 408"), head[:200]
    assert READ_S * 0.8 <= took < READ_S + 3, took


def test_a_prompt_request_is_not_affected(server: Ensemble) -> None:
    with connect(server) as sock:
        body = b'{"model": "mock-1", "messages": [{"role": "user", "content": "hi"}]}'
        sock.sendall(
            b"POST /api/v1/generate HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            + f"Authorization: Bearer {server.key}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        data, _ = read_to_close(sock)
    assert data.startswith(b"HTTP/1.1 200"), data[:200]
