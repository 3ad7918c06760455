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
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800


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


class SpawnFailed(OSError):
    """The child could not exec (it has exited 127, and is not reaped yet)."""

    def __init__(self, pid: int, err: int) -> None:
        super().__init__(err, os.strerror(err))
        self.pid = pid


def spawn(argv: list[bytes], env: list[bytes], fds: tuple[int, int, int],
          oom_score_adj: bytes | None, stray: tuple[int, ...], listen_pid_slot: int) -> int:
    """vfork + exec argv[0] with the set-up R and X need (_build.py, pymon_spawn). `fds`:
    what goes to 0, 1, 2 (-1: keep ours). `listen_pid_slot`: index in `env` to replace
    with LISTEN_PID=<the child's pid>, or -1. Returns the child's pid; raises OSError if
    vfork failed, SpawnFailed if the child did not get to exec."""
    c_args = [ffi.new("char[]", a) for a in argv]
    c_env = [ffi.new("char[]", e) for e in env]
    c_argv = ffi.new("char *[]", [*c_args, ffi.NULL])
    c_envp = ffi.new("char *[]", [*c_env, ffi.NULL])
    c_fds = ffi.new("int[3]", list(fds))
    c_stray = ffi.new("int[]", list(stray))
    listen_buf = ffi.new("char[]", 40)
    stage = ffi.new("int *")
    child_errno = ffi.new("int *")
    pid = _check(lib.pymon_spawn(c_args[0], c_argv, c_envp, c_fds,
                                 ffi.NULL if oom_score_adj is None else oom_score_adj,
                                 c_stray, len(stray), listen_pid_slot, listen_buf, 40,
                                 stage, child_errno), "vfork")
    if stage[0] >= 0:
        raise SpawnFailed(pid, child_errno[0])
    return int(pid)


def madvise_mergeable(start: int, length: int) -> None:
    """madvise(MADV_MERGEABLE) on [start, start+length): KSM may merge its identical pages
    with other processes' (when ksmd runs). Per mapping, so exec drops it."""
    _check(lib.madvise(ffi.cast("void *", start), length, lib.MADV_MERGEABLE),
           "madvise(MADV_MERGEABLE)")


def fork() -> int:
    """fork(2) without Python's at-fork work, for the server's monitors (_build.py)."""
    return _check(lib.fork(), "fork")


def _neg(ret: int, what: str) -> int:
    """For the functions that return -errno rather than set errno."""
    if ret < 0:
        raise OSError(-ret, f"{what}: {os.strerror(-ret)}")
    return ret


def snapshot_region(start: int, end: int, copy_all: bool, memfd: int, offset: int,
                    pagemap: int) -> int:
    """Copy [start, end) of our memory into memfd at `offset` and map the file over it,
    MAP_PRIVATE (_build.py, pymon_snapshot_region). Returns the pages copied; on OSError
    the range is as it was."""
    copied = ffi.new("long *")
    _neg(lib.pymon_snapshot_region(start, end, 1 if copy_all else 0, memfd, offset, pagemap,
                                   copied), "snapshot")
    return int(copied[0])


# (start, end, offset) of each snapshot range, kept for the monitors forked after it
_regions: object = None
_region_count = 0


def populate(start: int, length: int, write: bool) -> None:
    """madvise(MADV_POPULATE_READ or _WRITE): fault the range in now (Linux 5.14+)."""
    _check(lib.madvise(ffi.cast("void *", start), length,
                       lib.MADV_POPULATE_WRITE if write else lib.MADV_POPULATE_READ),
           "madvise(MADV_POPULATE)")


def snapshot_done(memfd: int, size: int, regions: list[tuple[int, int, int]]) -> None:
    """Map the snapshot read-only (the reference give_back compares with) and remember its
    ranges. Called once, in the server, before it forks any monitor."""
    global _regions, _region_count
    _neg(lib.pymon_snapshot_view(memfd, size), "mmap of the snapshot")
    _regions = ffi.new("unsigned long[]", [v for r in regions for v in r])
    _region_count = len(regions)


def has_snapshot() -> bool:
    return _regions is not None


def give_back() -> tuple[int, int] | None:
    """Drop our private copies of snapshot pages that hold what the snapshot holds
    (pymon_give_back). Returns (pages given back, private copies kept), or None in a
    process that has no snapshot (a cold monitor)."""
    if _regions is None:
        return None
    kept = ffi.new("long *")
    dropped = _neg(lib.pymon_give_back(_regions, _region_count, kept), "give back")
    return int(dropped), int(kept[0])


def give_back_on_timer(first_s: float, last_s: float) -> bool:
    """Give back from a timer's signal handler (pymon_give_back_on_timer): after first_s,
    then ten times further apart, up to every last_s. False in a process without a
    snapshot; OSError if the timer or the handler could not be set up."""
    if _regions is None:
        return False
    _neg(lib.pymon_give_back_on_timer(_regions, _region_count, round(first_s * 1000),
                                      round(last_s * 1000)), "give-back timer")
    return True


def give_back_signal() -> int:
    """The real-time signal the give-back timer uses."""
    return int(lib.pymon_give_back_signal())


def give_back_stats() -> tuple[int, int, int]:
    """(passes, pages given back in all, private copies kept at the last pass)."""
    out = ffi.new("long[3]")
    lib.pymon_give_back_stats(out)
    return int(out[0]), int(out[1]), int(out[2])


def read_i32(addr: int) -> int:
    """The int at `addr` in this process (pymon/server/settle.py reads CPython's own
    structures with it; nothing else should)."""
    return int(ffi.cast("int *", addr)[0])


def read_i16(addr: int) -> int:
    """The short at `addr` (settle.py, as read_i32)."""
    return int(ffi.cast("short *", addr)[0])


def write_i16(addr: int, value: int) -> None:
    """Write the short at `addr` (settle.py: a code object's co_warmup, nothing else)."""
    ffi.cast("short *", addr)[0] = value
