"""The pid file `ensemble serve` keeps in its data directory, so `ensemble reload` finds the server.

The data directory is the database's (like `encryption.key`): the one server using that database
on this machine. The file holds the main process's pid; it is removed when that process exits.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

from ensemble.config.schema import Config

NAME = "ensemble.pid"


def path_for(config: Config) -> Path:
    return Path(config.database.path).parent / NAME


def write(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    other = read(path)
    if other is not None and other != os.getpid() and _is_server(other):
        print(
            f"WARNING: {path} names another running ensemble serve (pid {other}) on this data directory; "
            "`ensemble reload` will signal this one",
            file=sys.stderr,
        )
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(f"{os.getpid()}\n")
    tmp.replace(path)


def remove(path: Path) -> None:
    """Remove the file if it still names this process (another server may have taken it over)."""
    if read(path) == os.getpid():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def read(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def running_server(path: Path) -> int:
    """The pid of the `ensemble serve` the file names; LookupError saying why there is none."""
    pid = read(path)
    if pid is None:
        raise LookupError(f"no running server found: {path} does not exist or holds no pid")
    if not _is_server(pid):
        raise LookupError(f"no running server found: {path} names pid {pid}, which is not an ensemble serve")
    return pid


def _is_server(pid: int) -> bool:
    """The process exists and (where /proc tells) runs `ensemble serve`: a stale pid may have been
    reused by an unrelated process, which must not get the signal."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # another user's process: not ours to signal
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc (macOS): the liveness check is all there is
    names = [a.rsplit(b"/", 1)[-1] for a in argv]  # `…/bin/ensemble serve` or `python -m ensemble serve`
    return b"ensemble" in names and b"serve" in argv
