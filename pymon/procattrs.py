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


def close_fds_except(keep: set[int] | frozenset[int] = frozenset(), low: int = 3) -> None:
    """Close every fd from `low` up except `keep` (before the exit command; in forked
    children). One os.closerange (close_range(2)) per gap between kept fds: a few syscalls
    however many fds there are, where listing /proc/self/fd and closing each took ~0.1 ms
    in a warm monitor, more with every running monitor's rescue channel in the server."""
    import resource

    # No fd is at or above the hard limit (a limit is never raised above it, and the
    # kernel caps it at fs.nr_open, so it is finite)
    high = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    start = low
    for fd in sorted(k for k in keep if k >= low):
        if fd > start:
            os.closerange(start, fd)
        start = fd + 1
    if start < high:
        os.closerange(start, high)


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
