"""The server's memory snapshot and a monitor's giving back (pymon/server/snapshot.py,
pymon/monitor/givingback.py). The snapshot rewrites the mappings of the process that takes
it, so every test that takes one does it in a forked child."""

from __future__ import annotations

import mmap
import os
import struct
import time
from ast import literal_eval
from pathlib import Path

import pytest

from pymon import _native
from pymon.server import snapshot
from pymon.server.snapshot import Range
from tests.fakes.forked import in_child

pytestmark = pytest.mark.timeout(60)

PAGE = mmap.PAGESIZE

MAPS = """\
00400000-0041f000 r--p 00000000 fe:00 260811                             /usr/bin/python3.11
00946000-00a85000 rw-p 00545000 fe:00 260811                             /usr/bin/python3.11
00a85000-00aca000 rw-p 00000000 00:00 0
1fa71000-1ff83000 rw-p 00000000 00:00 0                                  [heap]
7f0c9f800000-7f0c9f900000 rw-s 00000000 00:05 1234                       /dev/zero (deleted)
7f0c9fa00000-7f0c9fb00000 rw-p 00000000 00:00 0
7f0c9fc00000-7f0c9fc01000 ---p 00000000 00:00 0
7f0c9fd00000-7f0c9fd03000 r-xp 00000000 fe:00 339380                     /usr/lib/libc.so.6
7ffe91a78000-7ffe91a99000 rw-p 00000000 00:00 0                          [stack]
7ffe91b8e000-7ffe91b92000 r--p 00000000 00:00 0                          [vvar]
7ffe91b92000-7ffe91b94000 r-xp 00000000 00:00 0                          [vdso]
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
"""


def test_ranges_are_the_private_writable_mappings_but_the_stack() -> None:
    assert snapshot.snapshot_ranges(MAPS) == [
        Range(0x946000, 0xA85000, True),  # the interpreter's .data: every page is copied
        Range(0xA85000, 0xACA000, False),  # .bss: only the pages present
        Range(0x1FA71000, 0x1FF83000, False),
        Range(0x7F0C9FA00000, 0x7F0C9FB00000, False),
    ]


def _entry(addr: int) -> int:
    fd = os.open("/proc/self/pagemap", os.O_RDONLY)
    try:
        (entry,) = struct.unpack("Q", os.pread(fd, 8, addr // PAGE * 8))
    finally:
        os.close(fd)
    return int(entry)


def _anon(addr: int) -> bool:
    """Whether the page at addr is a private copy (present, not the file's page)."""
    entry = _entry(addr)
    return bool(entry >> 63 & 1) and not entry >> 61 & 1


def _shared(addr: int) -> bool:
    """Whether the page at addr is mapped, and is the snapshot file's page."""
    entry = _entry(addr)
    return bool(entry >> 63 & 1) and bool(entry >> 61 & 1)


def _snapshot_and_give_back(w: int) -> None:
    """In a child: a buffer of known pages, the snapshot, pages written and written back
    (page 0, and pages 2-3 side by side), a page changed (1), one untouched (4); then what
    give_back does to each."""
    buf = mmap.mmap(-1, 5 * PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    for i in range(5):
        buf[i * PAGE:(i + 1) * PAGE] = bytes([i + 1]) * PAGE
    addr = _native.ffi.cast("uintptr_t", _native.ffi.from_buffer(buf))
    start = int(addr)
    taken = snapshot.take()
    maps = Path("/proc/self/maps").read_text()
    backed = any(
        line.endswith(f"/memfd:{snapshot.NAME} (deleted)")
        and int(line.split("-")[0], 16) <= start < int(line.split("-")[1].split()[0], 16)
        for line in maps.splitlines())
    same = all(buf[i * PAGE] == i + 1 for i in range(5))
    for i in (0, 2, 3):  # written, then as it was (a reference count up and down)
        buf[i * PAGE] = 99
        buf[i * PAGE] = i + 1
    buf[PAGE] = 42  # page 1: changed
    copied = tuple(_anon(start + i * PAGE) for i in range(5))
    given = _native.give_back()
    # before anything reads them: the pages given back are mapped again, the file's
    shared = tuple(_shared(start + i * PAGE) for i in range(5))
    after = tuple(_anon(start + i * PAGE) for i in range(5))
    contents = tuple(buf[i * PAGE] for i in range(5)) + (buf[PAGE + 1],)
    os.write(w, repr((taken.ranges > 0, taken.skipped, backed, same, copied, given is not None
                      and given[0] >= 3, shared, after, contents)).encode())


def test_snapshot_keeps_memory_and_give_back_drops_the_copies_that_match() -> None:
    out, status = in_child(_snapshot_and_give_back)
    assert status == 0, out
    ok, skipped, backed, same, copied, gave, shared, after, contents = literal_eval(
        out.decode())
    assert ok and skipped == 0 and backed and same
    # written pages are private copies; an untouched one is still the file's
    assert copied == (True, True, True, True, False)
    assert gave
    # the pages written back (one alone, two side by side) are the snapshot's again and
    # mapped at once, so that reading them costs no fault; the changed one stays private
    assert after == (False, True, False, False, False)
    assert shared == (True, False, True, True, True)
    assert contents == (1, 42, 3, 4, 5, 2)


def _no_snapshot(w: int) -> None:
    os.write(w, repr((_native.has_snapshot(), _native.give_back())).encode())


def test_without_a_snapshot_there_is_nothing_to_give_back() -> None:
    out, status = in_child(_no_snapshot)
    assert status == 0 and literal_eval(out.decode()) == (False, None)


def _timer_pass(w: int) -> None:
    """In a child: a snapshot, a page written and written back, then the timer armed to
    fire in 50 ms while the child waits."""
    buf = mmap.mmap(-1, 2 * PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    buf[:] = b"\x07" * (2 * PAGE)
    start = int(_native.ffi.cast("uintptr_t", _native.ffi.from_buffer(buf)))
    snapshot.take()
    buf[0] = 8
    buf[0] = 7  # as it was: a copy the timer's pass gives back
    buf[PAGE] = 9  # changed: kept
    before = _anon(start)
    armed = _native.give_back_on_timer(0.05, 1000)
    sig = _native.give_back_signal()
    caught = int(next(line for line in Path("/proc/self/status").read_text().splitlines()
                      if line.startswith("SigCgt:")).split()[1], 16) >> (sig - 1) & 1
    deadline = time.monotonic() + 10
    while _native.give_back_stats()[0] == 0 and time.monotonic() < deadline:
        # no event to await: the pass runs in a C handler, which tells nothing but its counts
        time.sleep(0.01)
    passes, given, kept = _native.give_back_stats()
    os.write(w, repr((before, armed, bool(caught), passes, given >= 1, kept >= 1,
                      _anon(start), _anon(start + PAGE), buf[0], buf[PAGE])).encode())


def test_the_timer_gives_back_from_its_signal_handler() -> None:
    out, status = in_child(_timer_pass)
    assert status == 0, out
    before, armed, caught, passes, gave, kept, after0, after1, b0, b1 = literal_eval(
        out.decode())
    assert before and armed and caught
    assert passes == 1 and gave and kept
    assert (after0, after1) == (False, True)
    assert (b0, b1) == (7, 9)


def _no_snapshot_timer(w: int) -> None:
    os.write(w, repr(_native.give_back_on_timer(0.05, 1000)).encode())


def test_no_timer_without_a_snapshot() -> None:
    out, status = in_child(_no_snapshot_timer)
    assert status == 0 and literal_eval(out.decode()) is False
