"""Offering the server's memory to KSM, so that what its monitors copy can be merged again.

A warm monitor shares the server's pages until it writes to them; each monitor then holds
its own copy of every page it wrote (reference counts, specialised bytecode, its own
objects). It gives back those that hold what the server's snapshot holds
(pymon/server/snapshot.py); ~2.7 MiB that differ stay. Monitors do the same work on the
same heap, so many of those are identical from one monitor to the next. Kernel samepage
merging finds such pages and maps one copy, read-only, into every process that had one.

The server marks its private writable mappings MADV_MERGEABLE once it is warm (after the
snapshot: the mark belongs to a mapping, and the snapshot maps anew); forked
monitors inherit the mark with the mappings (exec drops it: the runtime and the containers
never carry it). Nothing happens unless the host runs ksmd (/sys/kernel/mm/ksm/run = 1);
then the merging costs ksmd's scanning CPU, which the host tunes (pages_to_scan, or the
scan-time advisor). Per mapping rather than prctl(PR_SET_MEMORY_MERGE), which would be
kept across exec and so reach the containers' memory.
"""

from __future__ import annotations

from pymon import _native
from pymon.procattrs import read_small
from pymon.server.maps import KERNEL, private_writable

KSM_RUN = "/sys/kernel/mm/ksm/run"


def mergeable_ranges(maps: str) -> list[tuple[int, int]]:
    """The (start, end) of each private writable mapping in a /proc/PID/maps text, but the
    kernel's special ones ([vvar], [vdso], [vsyscall]): what KSM may merge."""
    return [(m.start, m.end) for m in private_writable(maps) if m.name not in KERNEL]


def offer_memory() -> int:
    """Mark this process's private writable memory mergeable. Returns the bytes marked (0
    where the kernel has no KSM)."""
    if ksmd_state() is None:
        return 0
    try:
        ranges = mergeable_ranges(read_small("/proc/self/maps"))
    except OSError:
        return 0
    marked = 0
    for start, end in ranges:
        try:
            _native.madvise_mergeable(start, end - start)
        except OSError:
            continue  # a mapping KSM does not take (EINVAL), or one that went away
        marked += end - start
    return marked


def ksmd_state() -> str | None:
    """The host's /sys/kernel/mm/ksm/run ("1": ksmd runs), or None without KSM."""
    try:
        return read_small(KSM_RUN).strip()
    except OSError:
        return None
