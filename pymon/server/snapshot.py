"""The warm server's memory as a file, so that its monitors can give back what they copy.

A forked monitor shares the server's pages until it writes to one; it then holds its own
copy of that page. Many of those copies end up holding just what the server's page holds:
a reference count raised and lowered again, a cache filled with what it held. Anonymous
memory, once copied, cannot be shared again (MADV_DONTNEED on it reads back as zeros), but
a private mapping of a file can: dropping the copy maps the file's page again.

So once warm, the server copies its private writable memory (heap, pymalloc arenas, the
interpreter's and libraries' data) into a memfd, and maps the file over it, MAP_PRIVATE, at
the same addresses (`take`; the copying and mapping is in C, _build.py). The process goes
on unchanged: the same bytes at the same addresses, now backed by the file. Monitors forked
after that compare their copies with the file from time to time and drop those that match
(a POSIX timer armed by pymon/monitor/givingback.py runs `pymon_give_back`).

Not the stack (the code that copies runs on it), nor the kernel's [vvar]/[vdso]/[vsyscall].
For an anonymous mapping only the pages present are copied (an absent page reads as zeros,
as the file's holes do); for a file's private mapping (a library's .data) every page is,
since a hole in the memfd would read as zeros where the library's file has its data.
"""

from __future__ import annotations

import os
from typing import NamedTuple

from pymon import _native
from pymon.procattrs import read_small
from pymon.server.maps import KERNEL, private_writable

PAGE = 4096
NAME = "pymon-snapshot"  # /proc/PID/maps shows /memfd:pymon-snapshot (deleted)


class Range(NamedTuple):
    start: int
    end: int
    file_backed: bool


def snapshot_ranges(maps: str) -> list[Range]:
    """The private writable mappings of a /proc/PID/maps text that go into the snapshot."""
    return [Range(m.start, m.end, m.file_backed) for m in private_writable(maps)
            if m.name not in KERNEL and m.name != "[stack]" and not m.name.startswith("[stack:")]


class Taken(NamedTuple):
    """What `take` did, for the server's log."""

    ranges: int
    copied_pages: int
    skipped: int  # ranges that changed under us and were left as they were


def take() -> Taken:
    """Move this process's private writable memory onto a memfd (see above). A range that
    changes under us (freed, or remapped, between reading the maps and copying it) is left
    as it was; the rest is taken. Raises OSError if nothing could be (no memfd, no maps)."""
    ranges = snapshot_ranges(read_small("/proc/self/maps"))
    size = sum(r.end - r.start for r in ranges)
    memfd = os.memfd_create(NAME, os.MFD_CLOEXEC)
    try:
        pagemap = os.open("/proc/self/pagemap", os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.ftruncate(memfd, size)
            taken: list[tuple[int, int, int]] = []
            copied = skipped = offset = 0
            for r in ranges:
                try:
                    copied += _native.snapshot_region(r.start, r.end, r.file_backed, memfd,
                                                      offset, pagemap)
                    taken.append((r.start, r.end, offset))
                except OSError:
                    skipped += 1
                offset += r.end - r.start
            _native.snapshot_done(memfd, size, taken)
            _map_in(memfd, taken)
        finally:
            os.close(pagemap)
    finally:
        os.close(memfd)  # the mappings hold the file
    return Taken(len(taken), copied, skipped)


def _map_in(memfd: int, taken: list[tuple[int, int, int]]) -> None:
    """Map the snapshot's pages into our page tables now, and give each mapping an anon_vma
    (one page written), so that fork copies its page tables: fork skips a file mapping
    that has never been written, and every child would then fault on each page it reads
    (~5000 faults, ~3 ms per monitor, measured). Only the file's data: populating a hole
    would allocate a page for it. Best effort: before Linux 5.14 (EINVAL) children fault."""
    for start, end, offset in taken:
        pos, first = offset, True
        limit = offset + (end - start)
        while pos < limit:
            try:
                data = os.lseek(memfd, pos, os.SEEK_DATA)
            except OSError:
                break  # ENXIO: no data after pos
            if data >= limit:
                break
            hole = min(os.lseek(memfd, data, os.SEEK_HOLE), limit)
            try:
                if first:
                    _native.populate(start + data - offset, PAGE, write=True)
                    first = False
                _native.populate(start + data - offset, hole - data, write=False)
            except OSError:
                return
            pos = hole
