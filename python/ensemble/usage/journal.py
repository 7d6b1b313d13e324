"""The worker's crash journal: what the request log has not written yet survives a killed worker.

The request log reaches SQLite in batches (every `flush_interval`), so a worker killed by SIGKILL or
a crash would lose the records it had not flushed and never record the requests it was answering.
Each worker therefore appends to a file of its own (`<database dir>/journal/<pid>.journal`, plain
`os.write`, no fsync: a killed process loses nothing the kernel already has):

    + ["req_…", "key_…", "model", "created_at"]   a request began (admitted to the gateway)
    = {LogRecord without the response body}       its record was handed to the request log
    - req_…                                       that record is in SQLite

A worker starting (Granian's replacement for a dead one, or a restart) takes the journals of dead
workers: records that never reached SQLite are written, and requests that never got a record are
written as failed (HTTP 500, `worker died`). So the durability window of the request log is what the
kernel had not been handed: nothing for a killed worker, the page cache for a machine crash
(docs/operations.md). The file is compacted to the open requests when it grows past COMPACT_BYTES.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import orjson

log = logging.getLogger("ensemble.usage")

COMPACT_BYTES = 8 * 1024 * 1024
WORKER_DIED = "the worker answering this request died before it finished (recorded at recovery)"


@dataclass(slots=True)
class Orphan:
    """A request a dead worker began: its record if it had one, else what is known of it."""

    request_id: str
    key_id: str
    model: str
    created_at: str
    record: bytes | None = None  # the LogRecord JSON ('=' line)


@dataclass(slots=True)
class _Open:
    begun: bytes
    recorded: bytes | None = None


@dataclass
class InFlightJournal:
    directory: Path
    _fd: int = -1
    _size: int = 0
    _open: dict[str, _Open] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return self.directory / f"{os.getpid()}.journal"

    def open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC, 0o600)

    def _append(self, data: bytes) -> None:
        if self._fd < 0:
            return
        try:
            os.write(self._fd, data)
        except OSError as e:  # a full disk must not fail requests; the window is then the flush's
            log.warning("crash journal write failed: %s", e)
            return
        self._size += len(data)
        if self._size > COMPACT_BYTES:
            self._compact()

    def begin(self, request_id: str, key_id: str, model: str, created_at: str) -> None:
        line = b"+" + orjson.dumps([request_id, key_id, model, created_at]) + b"\n"
        self._open[request_id] = _Open(line)
        self._append(line)

    def recorded(self, request_id: str, record: bytes) -> None:
        entry = self._open.get(request_id)
        if entry is None:
            return  # never admitted (refused before the gateway): nothing to recover
        entry.recorded = b"=" + record + b"\n"
        self._append(entry.recorded)

    def written(self, request_ids: Iterable[str]) -> None:
        lines = [b"-" + rid.encode() + b"\n" for rid in request_ids if self._open.pop(rid, None) is not None]
        if lines:
            self._append(b"".join(lines))

    def _compact(self) -> None:
        """Rewrite the file with only the open requests (atomically: a kill mid-way leaves one of the two)."""
        tmp = self.path.with_suffix(".compact")
        data = b"".join(e.begun + (e.recorded or b"") for e in self._open.values())
        tmp.write_bytes(data)
        os.replace(tmp, self.path)
        os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self._size = len(data)

    def close(self) -> None:
        """Clean shutdown: everything was written, so the file goes (unless something stayed open)."""
        if self._fd < 0:
            return
        os.close(self._fd)
        self._fd = -1
        if not self._open:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # a file named after this process is a dead predecessor's (the pid was reused)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    # A killed worker whose parent died too is re-parented; where PID 1 does not reap (a container
    # without an init), it stays a zombie that `kill(pid, 0)` still finds: it is dead all the same.
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] == b"Z"


def parse(data: bytes) -> list[Orphan]:
    """The requests a journal left open, in the order they began (torn last line ignored)."""
    open_: dict[str, Orphan] = {}
    for line in data.split(b"\n"):
        if not line:
            continue
        kind, body = line[:1], line[1:]
        try:
            if kind == b"+":
                rid, key_id, model, created_at = orjson.loads(body)
                open_[rid] = Orphan(rid, key_id, model, created_at)
            elif kind == b"=":
                rid = msgspec.json.decode(body, type=dict)["request_id"]
                if rid in open_:
                    open_[rid].record = body
            elif kind == b"-":
                open_.pop(body.decode(), None)
        except (ValueError, KeyError, msgspec.DecodeError):
            continue  # the line a kill cut short
    return list(open_.values())


def take_orphans(directory: Path) -> list[Orphan]:
    """Claim (by renaming; another worker starting at the same time gets each file at most once)
    the journals of dead workers and return what they left open."""
    if not directory.is_dir():
        return []
    out: list[Orphan] = []
    for path in sorted(directory.glob("*.journal")):
        try:
            pid = int(path.stem)
        except ValueError:
            continue
        if _alive(pid):
            continue
        claimed = path.with_suffix(f".recovering-{os.getpid()}")
        try:
            os.rename(path, claimed)
        except FileNotFoundError:
            continue  # another worker took it
        out.extend(parse(claimed.read_bytes()))
        claimed.unlink()
    return out
