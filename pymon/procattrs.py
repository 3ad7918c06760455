"""Process attributes the monitor saves and hands back to its children (contract §2.6)."""

from __future__ import annotations

import os

_OOM = "/proc/self/oom_score_adj"


def read_small(path: str) -> str:
    """A small file (procfs, cgroupfs) read with os calls: open() in text mode builds a
    buffered reader and a text wrapper each time, ~10 us, on the paths that set up a
    monitor and record its exit. Raises OSError."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks).decode(errors="replace")


def lower_oom_score_adj() -> bytes | None:
    """Make this process the last the OOM killer picks (-1000), and return the previous
    value for R and X. None when it could not be read (no /proc, say)."""
    try:
        fd = os.open(_OOM, os.O_RDWR)
    except OSError:
        return None
    try:
        old = os.read(fd, 32).strip()
        try:
            os.write(fd, b"-1000")
        except OSError:
            pass  # EACCES when unprivileged: ignored, as conmon does
        return old or None
    finally:
        os.close(fd)


def close_fds_except(keep: set[int] | frozenset[int] = frozenset()) -> None:
    """Close every fd above 2 except `keep` (before the exit command; in forked helpers)."""
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        fds = list(range(3, 65536))
    for fd in fds:
        if fd > 2 and fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass


def restore_oom_score_adj(value: bytes | None) -> None:
    if value is None:
        return
    try:
        fd = os.open(_OOM, os.O_WRONLY)
    except OSError:
        return
    try:
        os.write(fd, value)
    except OSError:
        pass
    finally:
        os.close(fd)
