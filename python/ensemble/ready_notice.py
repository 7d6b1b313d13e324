"""Development mode's start-up notice: once the server answers, the first client key (created when the
database has none) or the command that makes one, with a ready-to-paste curl line.

It is printed last, after the workers' start-up lines, so that it is what a newcomer sees at the
bottom of the terminal; and only once the server accepts the key, so the curl line works when shown.
The key is created before the workers start (they load it with the table); if the server stops
before the notice could show it, it is revoked, so that the next start makes and shows a new one.
"""

from __future__ import annotations

import shlex
import shutil
import sys
import threading
import time
from pathlib import Path

from ensemble.config import Config
from ensemble.storage import database, keys

RULE = "=" * 78
POLL_S = 0.1
KEY_ACCEPTED_WITHIN_S = 3.0  # servers load new keys from the database within a second


def invocation(config_path: str, default_config: str) -> str:
    """`ensemble` as this shell can run it again: bare when it is on PATH, else the script's path
    (`.venv/bin/ensemble` after `make run`), with `--config` when it is not the default."""
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
    return command if config_path == default_config else f"{command} --config {shlex.quote(config_path)}"


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
    import httpx  # only when there is a server to ask: the CLI starts faster without it

    headers = {"authorization": f"Bearer {key}"} if key else {}
    try:
        return httpx.get(url, headers=headers, timeout=2).status_code
    except httpx.HTTPError:
        return None  # nothing answers there


def wait_until_accepted(base: str, key: str, stopped: threading.Event | None = None) -> bool:
    """Wait until the server at `base` accepts `key` (it loads new keys within a second), so that a
    key works once it is shown. False at once when no server answers there, or after
    KEY_ACCEPTED_WITHIN_S, or when `stopped` is set."""
    stopped = stopped or threading.Event()
    deadline = time.monotonic() + KEY_ACCEPTED_WITHIN_S
    while (status := _status(base + "/api/v1/models", key)) == 401:
        if time.monotonic() > deadline or stopped.wait(POLL_S):
            return False
    return status is not None


def _curl(base: str) -> str:
    return (
        f"  curl -s {base}/api/v1/generate \\\n"
        "    -H \"Authorization: Bearer $ENSEMBLE_KEY\" -H 'Content-Type: application/json' \\\n"
        '    -d \'{"model": "mock-1", "messages": [{"role": "user", "content": "Hello!"}]}\''
    )


def render(config: Config, base: str, key: str | None, command: str) -> str:
    host = config.server.host
    listening = (
        "only this machine can connect"
        if host.startswith("127.") or host in ("localhost", "::1")
        else f"listening on {host}, other machines can connect"
    )
    create = f"{command} keys create --name my-app"
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
    """Waits in a thread for the server, then prints the notice (see the module docstring)."""

    def __init__(self, config: Config, command: str) -> None:
        self.config = config
        self.command = command
        self.base = local_url(config)
        self.key, self._key_id = self._first_key()
        self._stopped = threading.Event()
        self._lock = threading.Lock()  # stop() and printing exclude each other: shown is exact
        self._shown = False
        self._thread = threading.Thread(target=self._run, name="ready-notice", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """The server has exited: stop waiting; a first key nobody saw is revoked."""
        with self._lock:
            self._stopped.set()
            if self._shown or self._key_id is None:
                return
        conn = database.connect_sync(self.config.database.path)
        try:
            keys.set_status(conn, self._key_id, "revoked")
        finally:
            conn.close()

    def _run(self) -> None:
        while _status(self.base + "/health") != 200:
            if self._stopped.wait(POLL_S):
                return
        if self.key is not None:
            wait_until_accepted(self.base, self.key, self._stopped)
        with self._lock:
            if self._stopped.is_set():
                return
            print(render(self.config, self.base, self.key, self.command), flush=True)
            self._shown = True

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
