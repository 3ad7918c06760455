"""The /proc/PID/maps reader both the snapshot and KSM use (pymon/server/maps.py)."""

from __future__ import annotations

from pymon.server.maps import Mapping, private_writable

MAPS = """\
00400000-0041f000 r--p 00000000 fe:00 260811                             /usr/bin/python3.11
00946000-00a85000 rw-p 00545000 fe:00 260811                             /usr/bin/python3.11
00a85000-00aca000 rw-p 00000000 00:00 0
7fabac800000-7fabac900000 rw-s 00000000 00:05 1234                       /dev/shm/x
7fabac900000-7fabac901000 ---p 00000000 00:00 0
7f0ca0000000-7f0ca0021000 rw-p 00000000 00:01 5678                       /memfd:a b (deleted)
7fff72b23000-7fff72b44000 rw-p 00000000 00:00 0                          [stack]
"""


def test_private_writable_with_names_and_backing() -> None:
    assert private_writable(MAPS) == [
        Mapping(0x946000, 0xA85000, True, "/usr/bin/python3.11"),
        Mapping(0xA85000, 0xACA000, False, ""),
        Mapping(0x7F0CA0000000, 0x7F0CA0021000, True, "/memfd:a b (deleted)"),  # spaces kept
        Mapping(0x7FFF72B23000, 0x7FFF72B44000, False, "[stack]"),
    ]  # not the read-only text, the shared file or the guard page


def test_odd_lines_are_skipped() -> None:
    assert private_writable("") == []
    assert private_writable("garbage\n\n7f-80 rw\n") == []
