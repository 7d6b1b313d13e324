"""A raw-socket HTTP/1.1 client for disconnect tests: send a request, read until a marker, hang up,
and report exactly when the connection was closed."""

from __future__ import annotations

import socket
import time
from typing import Any

import orjson


class RawRequest:
    def __init__(self, url: str, path: str, key: str, body: dict[str, Any], request_id: str) -> None:
        host, _, port = url.removeprefix("http://").partition(":")
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        payload = orjson.dumps(body)
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
            f"X-Request-ID: {request_id}\r\n\r\n"
        )
        self.sock.sendall(head.encode() + payload)
        self.received = b""

    def read_until(self, marker: bytes, timeout: float = 10.0) -> bytes:
        deadline = time.monotonic() + timeout
        while marker not in self.received:
            self.sock.settimeout(max(deadline - time.monotonic(), 0.01))
            chunk = self.sock.recv(65536)
            if not chunk:
                raise AssertionError(f"connection ended before {marker!r}: {self.received!r}")
            self.received += chunk
        return self.received

    def close(self) -> float:
        """Close the connection; return the wall-clock time of the close (comparable with the
        fake upstream's `disconnected_at`)."""
        self.sock.close()
        return time.time()
