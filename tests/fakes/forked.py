"""Run a piece of a test in a forked child, so that what it does to the process (signal
dispositions, closed fds) leaves the test runner alone."""

from __future__ import annotations

import os
from collections.abc import Callable


def in_child(body: Callable[[int], None]) -> tuple[bytes, int]:
    """Fork; the child runs body(w) with `w` the write end of a pipe (it may exec), and
    exits 0 after it (99 if it raised). Returns what was written to `w` and the child's
    wait status."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        status = 99
        try:
            os.close(r)
            body(w)
            status = 0
        finally:
            os._exit(status)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 65536):
        chunks.append(chunk)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    return b"".join(chunks), status
