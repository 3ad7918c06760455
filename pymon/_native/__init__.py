"""Typed wrappers over the few syscalls the stdlib does not expose (see _build.py)."""

from __future__ import annotations

import os

from pymon._native._pymon_native import ffi, lib


def _check(ret: int, what: str) -> int:
    if ret < 0:
        err = ffi.errno
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


def set_child_subreaper(on: bool) -> None:
    """prctl(PR_SET_CHILD_SUBREAPER): orphans below us (the container's init once the
    runtime exits) are re-parented to us, so we can reap them and read their status."""
    _check(lib.prctl(lib.PR_SET_CHILD_SUBREAPER, 1 if on else 0, 0, 0, 0), "PR_SET_CHILD_SUBREAPER")


def keep_heap(trim_threshold: int, mmap_threshold: int) -> None:
    """mallopt: serve buffers below `mmap_threshold` from the heap and keep up to
    `trim_threshold` of freed heap instead of returning it to the kernel at every free.
    The relay allocates a few hundred KiB per read; without this each read costs brk
    calls and fresh zeroed pages (measured: ~4 brk per read under a flood)."""
    lib.mallopt(lib.M_MMAP_THRESHOLD, mmap_threshold)
    lib.mallopt(lib.M_TRIM_THRESHOLD, trim_threshold)


def set_pdeathsig(sig: int) -> None:
    """prctl(PR_SET_PDEATHSIG): the kernel sends `sig` to us when our parent dies."""
    _check(lib.prctl(lib.PR_SET_PDEATHSIG, sig, 0, 0, 0), "PR_SET_PDEATHSIG")


# inotify event masks (linux/inotify.h), for callers of add_watch
IN_MODIFY = 0x00000002
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100


def inotify_init() -> int:
    """A non-blocking, close-on-exec inotify fd."""
    return _check(lib.inotify_init1(lib.IN_NONBLOCK | lib.IN_CLOEXEC), "inotify_init1")


def inotify_add_watch(fd: int, path: str, mask: int) -> int:
    return _check(lib.inotify_add_watch(fd, os.fsencode(path), mask), f"inotify_add_watch {path}")


def inotify_events(data: bytes) -> list[tuple[int, int, str]]:
    """(wd, mask, name) for each event in a read() of an inotify fd."""
    import struct

    out, i = [], 0
    while i + 16 <= len(data):
        wd, mask, _cookie, size = struct.unpack_from("iIII", data, i)
        name = data[i + 16:i + 16 + size].rstrip(b"\0").decode(errors="replace")
        out.append((wd, mask, name))
        i += 16 + size
    return out
