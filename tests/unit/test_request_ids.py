"""Request ids: unique within a process, and a forked worker never continues its parent's sequence."""

from __future__ import annotations

import os

from ensemble.server.http import new_request_id


def test_ids_in_one_process_are_distinct_and_share_the_prefix() -> None:
    first, second = new_request_id(), new_request_id()
    assert first != second
    assert first[:12] == second[:12]  # "req_" + the process's 8 hex digits
    assert len(first) == 4 + 8 + 16


def test_a_forked_child_draws_its_own_prefix() -> None:
    parent = new_request_id()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next id and leave without running pytest's teardown
        os.write(write, new_request_id().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 100).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert child[:12] != parent[:12]
    assert new_request_id()[:12] == parent[:12]  # the parent's sequence is untouched
