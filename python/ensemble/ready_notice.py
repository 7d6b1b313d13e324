"""Development mode's start-up notice: once the server answers, the first client key (created when the
database has none) or the command that makes one, with a ready-to-paste curl line.

It is printed last, after the workers' start-up lines, so that it is what a newcomer sees at the
bottom of the terminal; and only once the server accepts the key, so the curl line works when shown.
The key is created before the workers start (they load it with the table); if the server stops
before the notice could show it, it is revoked, so that the next start makes and shows a new one.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shlex
import shutil
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from ensemble.config import Config
from ensemble.storage import database, keys

RULE = "=" * 78
POLL_S = 0.1
KEY_ACCEPTED_WITHIN_S = 3.0  # servers load new keys from the database within a second


def key_create_command(config_path: str, default_config: str) -> str:
    """`ensemble keys create` as this shell can run it: `ensemble` bare when it is on PATH, else the
    script's path (`.venv/bin/ensemble` after `make run`); `--config` when it is not the default."""
    script = Path(sys.argv[0])
    if script.name != "ensemble":  # python -m ensemble
        command = f"{shlex.quote(sys.executable)} -m ensemble"
    elif (found := shutil.which("ensemble")) and Path(found).resolve() == script.resolve():
        command = "ensemble"
    else:
        try:
            command = str(script.resolve().relative_to(Path.cwd().resolve()))
        except ValueError:
            command = str(script.resolve())
    config = "" if config_path == default_config else f" --config {shlex.quote(config_path)}"
    return f"{command} keys create{config} --name my-app"


def connect_host(host: str) -> str:
    """Where a client on this machine reaches a server listening on `host`."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def local_url(config: Config) -> str:
    """The URL of this config's server on this machine."""
    return f"http://{connect_host(config.server.host)}:{config.server.port}"


def _status(url: str, key: str | None = None) -> int | None:
    """The status of GET `url`, or None when nothing answers there. (The standard library's client:
    plain HTTP on this machine needs no more, and it costs the CLI nothing to import.)"""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=2)
    try:
        conn.request("GET", parts.path, headers={"authorization": f"Bearer {key}"} if key else {})
        return conn.getresponse().status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def wait_until_accepted(base: str, key: str, server_alive: Callable[[], bool] = lambda: True) -> bool:
    """Wait until the server at `base` accepts `key` (it loads new keys within a second), so that a
    key works once it is shown. False at once when no server answers there, or after
    KEY_ACCEPTED_WITHIN_S, or once `server_alive` says it is gone."""
    deadline = time.monotonic() + KEY_ACCEPTED_WITHIN_S
    while (status := _status(base + "/api/v1/models", key)) == 401:
        if time.monotonic() > deadline or not server_alive():
            return False
        time.sleep(POLL_S)
    return status is not None


def _curl(base: str) -> str:
    return (
        f"  curl -s {base}/api/v1/generate \\\n"
        "    -H \"Authorization: Bearer $ENSEMBLE_KEY\" -H 'Content-Type: application/json' \\\n"
        '    -d \'{"model": "mock-1", "messages": [{"role": "user", "content": "Hello!"}]}\''
    )


def render(config: Config, base: str, key: str | None, create: str) -> str:
    host = config.server.host
    listening = (
        "only this machine can connect"
        if host.startswith("127.") or host in ("localhost", "::1")
        else f"listening on {host}, other machines can connect"
    )
    if key is not None:
        body = (
            "A first client API key was created; it is shown only this once. Try it:\n\n"
            f"  export ENSEMBLE_KEY={key}\n{_curl(base)}\n\n"
            f"More keys: {create}"
        )
    else:
        body = (
            "Client keys are shown only when they are created, and this database has some already.\n"
            f"Make one and try it:\n\n  export ENSEMBLE_KEY=$({create})\n{_curl(base)}"
        )
    return f"\n{RULE}\nEnsemble is ready at {base} (development mode: {listening}).\n\n{body}\n{RULE}\n"


class ReadyNotice:
    """Waits in a child process for the server, then prints the notice (see the module docstring).

    A process, not a thread: Granian forks its workers from this process right after start(), and a
    thread caught mid-import or mid-request at that moment leaves its locks held in every worker,
    which then hangs on its first import of the same module."""

    def __init__(self, config: Config, create_command: str) -> None:
        self.config = config
        self.create_command = create_command
        self.base = local_url(config)
        self.key, self._key_id = self._first_key()
        self._child = 0

    def start(self) -> None:
        parent = os.getpid()
        child = os.fork()
        if child:
            self._child = child
            return
        code = 1
        try:
            signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C ends it quietly, with the server
            signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a reload is for the server, not for this
            code = 0 if self._wait_and_print(lambda: os.getppid() == parent) else 1
        finally:
            os._exit(code)  # never return into the server's code, nor run its exit handlers

    def stop(self) -> None:
        """The server has exited: stop waiting; a first key nobody saw is revoked."""
        if not self._child:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self._child, signal.SIGTERM)
        try:
            _, status = os.waitpid(self._child, 0)
        except ChildProcessError:
            status = 0  # reaped elsewhere: do not revoke what may have been shown
        if (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0) or self._key_id is None:
            return
        conn = database.connect_sync(self.config.database.path)
        try:
            keys.set_status(conn, self._key_id, "revoked")
        finally:
            conn.close()

    def _wait_and_print(self, server_alive: Callable[[], bool]) -> bool:
        while _status(self.base + "/health") != 200:
            if not server_alive():
                return False
            time.sleep(POLL_S)
        if self.key is not None:
            wait_until_accepted(self.base, self.key, server_alive)
        # A SIGTERM now would cut the notice short and revoke a key already half shown.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
        print(render(self.config, self.base, self.key, self.create_command), flush=True)
        return True

    def _first_key(self) -> tuple[str | None, str | None]:
        """A database without any usable client key gets one: (key, key id); else (None, None)."""
        conn = database.connect_sync(self.config.database.path)
        try:
            if keys.count_usable_keys(conn):
                return None, None
            key, record = keys.create_key(conn, name="development")
            return key, record.key_id
        finally:
            conn.close()
