"""Aborting an HTTP/1.1 response mid-body, so the client sees an incomplete answer.

A streamed body that ends with its terminating chunk reads as complete. Where the format has no
in-band error (plain text), a broken answer must instead end without one: the client's HTTP library
then reports an incomplete body. Granian's RSGI stream transport (2.8) can only end a body cleanly,
so the connection itself is shut down: its socket is found among this worker's descriptors by the
client's address (the error path only; a scan of /proc/self/fd) and shut down both ways.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("ensemble.streaming")

_FDS = "/proc/self/fd"


def _address(name: object) -> str | None:
    """ "host:port" as RSGI's scope writes it (no brackets around an IPv6 host)."""
    if isinstance(name, tuple) and len(name) >= 2:
        return f"{name[0]}:{name[1]}"
    return None


def abort_connection(client: str, server: str) -> bool:
    """Shut down the TCP connection from `client` to `server` (RSGI's "host:port" strings); False
    when no such socket is open in this process (already gone)."""
    try:
        names = os.listdir(_FDS)
    except OSError:
        return False
    wanted = {client}
    port = server.rsplit(":", 1)[-1]
    for name in names:
        try:
            if not os.readlink(f"{_FDS}/{name}").startswith("socket:"):
                continue
            sock = socket.socket(fileno=os.dup(int(name)))
        except (OSError, ValueError):
            continue
        try:
            if sock.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            # The peer's address and port identify the connection; the local port rules out an
            # outgoing (upstream) connection that happens to have the same peer.
            if _address(sock.getpeername()) in wanted and str(sock.getsockname()[1]) == port:
                sock.shutdown(socket.SHUT_RDWR)
                return True
        except OSError:
            continue
        finally:
            sock.close()  # the duplicate only: the shutdown already applies to the connection
    log.debug("no open socket from %s to abort", client)
    return False
