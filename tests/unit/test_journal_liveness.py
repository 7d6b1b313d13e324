"""A dead worker's journal is taken over even when the worker lingers as an unreaped zombie."""

import os
from pathlib import Path

from ensemble.usage.journal import _alive
from support.waiting import wait_until


def test_a_zombie_is_dead_and_a_running_process_alive() -> None:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    try:
        # Not reaped yet: kill(pid, 0) still finds it, but it is a zombie.
        stat = Path(f"/proc/{pid}/stat")
        wait_until(lambda: stat.read_bytes().rsplit(b")", 1)[1][1:2] == b"Z", what="the child a zombie")
        assert not _alive(pid)
        assert _alive(os.getppid())
    finally:
        os.waitpid(pid, 0)
    assert not _alive(pid)
