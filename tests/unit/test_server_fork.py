"""The server forks its monitors with the C library's fork, not os.fork (_native/_build.py
says why): the child must run on in Python all the same."""

from __future__ import annotations

import os
import threading
from ast import literal_eval

import pytest

from pymon import _native
from tests.fakes.forked import in_child

pytestmark = pytest.mark.timeout(30)


def _fork_child(w: int) -> None:
    r, w2 = os.pipe()
    pid = _native.fork()
    if pid == 0:
        # Python runs on in the child, as its only thread
        os.write(w2, repr((os.getpid(), threading.get_native_id(),
                           threading.active_count())).encode())
        os._exit(0)
    os.close(w2)
    data = os.read(r, 200)
    _, status = os.waitpid(pid, 0)
    os.write(w, repr((pid, data.decode(), status)).encode())


def test_the_servers_fork_leaves_a_child_that_runs_python() -> None:
    out, status = in_child(_fork_child)
    assert status == 0, out
    pid, data, child_status = literal_eval(out.decode())
    assert child_status == 0
    assert literal_eval(data) == (pid, pid, 1)
