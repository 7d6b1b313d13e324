"""A refusal sent before the request body was read (401, 404, 405, 413) must not leave the keep-alive
connection in a state where the client's next request on it is dropped: the server either reads
the rest of the body and answers the next request, or says `connection: close` and closes."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.ensemble import Ensemble

pytestmark = pytest.mark.integration

MAX_BODY = 64 * 1024
BODY = b'{"pad": "' + b"x" * 100_000 + b'"}'  # 100 KB: over the limit, and over a socket buffer's worth


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ensemble]:
    srv = Ensemble(
        Path(tmp_path_factory.mktemp("refusal")),
        config={"server": {"max_request_bytes": MAX_BODY}},
        env={"ENSEMBLE_ADMIN_KEY": "adm_" + "k" * 32},
    )
    yield srv
    srv.stop()


class Conn:
    """One raw keep-alive connection; responses read by Content-Length or chunked framing."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buf += chunk
        return bool(chunk)

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                raise EOFError
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            if not self._fill():
                raise EOFError
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def response(self) -> tuple[int, dict[str, str]] | None:
        """The next response's status and headers (body consumed), or None if the server closed."""
        try:
            status = int(self._line().split(b" ", 2)[1])
        except (EOFError, ConnectionResetError):
            return None
        headers: dict[str, str] = {}
        while line := self._line():
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding") == "chunked":
            while size := int(self._line(), 16):
                self._take(size + 2)
            self._line()
        else:
            self._take(int(headers.get("content-length", "0")))
        return status, headers


@pytest.mark.parametrize(
    ("method", "path", "auth", "status"),
    [
        ("POST", "/api/v1/generate", False, 401),
        ("POST", "/v1/chat/completions", False, 401),
        ("POST", "/admin/keys", False, 401),
        ("POST", "/api/v1/models", True, 405),
        ("POST", "/no/such/route", True, 404),
        ("POST", "/api/v1/generate", True, 413),
    ],
)
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_the_next_request_on_the_connection_is_answered_or_the_server_says_close(
    server: Ensemble, method: str, path: str, auth: bool, status: int, framing: str
) -> None:
    for _ in range(5):  # the drop was intermittent: a few tries on fresh connections
        conn = Conn(server.port)
        head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        if auth:
            head += f"Authorization: Bearer {server.key}\r\n"
        if framing == "chunked":
            body = (
                b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (BODY[:50_000], BODY[50_000:])) + b"0\r\n\r\n"
            )
            head += "Transfer-Encoding: chunked\r\n"
        else:
            body = BODY
            head += f"Content-Length: {len(BODY)}\r\n"
        follow_up = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
        # The server may close while the body is still coming: then it must have said so.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            conn.sock.sendall(head.encode() + b"\r\n" + body + follow_up)
        first = conn.response()
        assert first is not None, "the refusal itself was never received"
        assert first[0] == status, first
        second = conn.response()
        if first[1].get("connection", "").lower() == "close":
            assert second is None, "the server said close but kept the connection"
        else:
            assert second is not None, f"{method} {path} {status}: next request dropped without an answer"
            assert second[0] == 200
        conn.sock.close()


def test_a_body_too_big_to_drain_gets_its_refusal_and_connection_close(server: Ensemble) -> None:
    """Past the drain bound (docs/security.md) the refusal says `connection: close`, and the
    server does close: the client knows to send its next request on a new connection."""
    conn = Conn(server.port)
    declared = 8 * 1024 * 1024
    head = (
        f"POST /api/v1/generate HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {server.key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {declared}\r\n\r\n"
    )
    conn.sock.sendall(head.encode() + b"x" * 50_000)
    first = conn.response()
    assert first is not None and first[0] == 413, first
    assert first[1]["connection"] == "close"
    assert conn.response() is None
    conn.sock.close()
