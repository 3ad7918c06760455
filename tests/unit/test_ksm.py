"""Which mappings the server offers to KSM (pymon/server/ksm.py)."""

from __future__ import annotations

from pymon.server.ksm import mergeable_ranges

MAPS = """\
00400000-0041f000 r--p 00000000 fe:00 260811                             /usr/bin/python3.11
00946000-00a85000 rw-p 00545000 fe:00 260811                             /usr/bin/python3.11
00a85000-00aca000 rw-p 00000000 00:00 0
1fa71000-1ff83000 rw-p 00000000 00:00 0                                  [heap]
7fabac45a000-7fabac7c0000 rw-p 00000000 00:00 0
7fabac800000-7fabac900000 rw-s 00000000 00:05 1234                       /dev/shm/x
7fabac900000-7fabac901000 ---p 00000000 00:00 0
7fabac9ec000-7fabac9ee000 rw-p 001d3000 fe:00 339380                     /usr/lib/x86_64-linux-gnu/libc.so.6
7fff72b23000-7fff72b44000 rw-p 00000000 00:00 0                          [stack]
7fff72bf0000-7fff72bf4000 r--p 00000000 00:00 0                          [vvar]
7fff72bf4000-7fff72bf6000 r-xp 00000000 00:00 0                          [vdso]
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
"""


def test_private_writable_mappings_only() -> None:
    assert mergeable_ranges(MAPS) == [
        (0x946000, 0xA85000),  # the interpreter's data: static types, deep-frozen code
        (0xA85000, 0xACA000),
        (0x1FA71000, 0x1FF83000),
        (0x7FABAC45A000, 0x7FABAC7C0000),  # pymalloc arenas
        (0x7FABAC9EC000, 0x7FABAC9EE000),
        (0x7FFF72B23000, 0x7FFF72B44000),
    ]  # not the shared file, the guard page, or the kernel's own


def test_nothing_in_an_empty_or_odd_text() -> None:
    assert mergeable_ranges("") == []
    assert mergeable_ranges("garbage\n\n7f-80 rw\n") == []
