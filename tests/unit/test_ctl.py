"""ctl/winsz line parsing (§7.2): each line judged on its own, bad ones ignored."""

from __future__ import annotations

import pytest

from pymon.ctl import MAX_LINE, Control, LineSplitter, parse_ctl, parse_winsz


@pytest.mark.parametrize("line, expected", [
    (b"1 24 80", (1, 24, 80)),
    (b"1 2 2 3", (1, 2, 2)),          # extra fields ignored (conmon compatibility)
    (b"1 0010 0020", (1, 10, 20)),    # leading zeros: decimal, not octal
    (b"1 1000 1000", (1, 1000, 1000)),
    (b"2 0 0", (2, 0, 0)),
    (b"  1\t5  6 ", (1, 5, 6)),
    (b"999 2 2", (999, 2, 2)),        # parsed; the type is judged by Control
])
def test_valid(line: bytes, expected: tuple[int, int, int]) -> None:
    assert parse_ctl(line) == expected


@pytest.mark.parametrize("line", [
    b"", b"1", b"1 2", b"foo", b"999", b"1 -1 -1", b"1 10.5 20.3", b"1 0x10 0x20",
    b"1 100000 100000", b"1 1001 1000", b"1 1000 1001", b"1 65535 65535",
    b"1 99999999999999999999999 1", b"\xff\xfe 1 1", b"2 1001 0",
])
def test_invalid(line: bytes) -> None:
    assert parse_ctl(line) is None


def test_winsz_lines() -> None:
    assert parse_winsz(b"30 100") == (30, 100)
    assert parse_winsz(b"30") is None


def test_splitter_keeps_partial_lines_and_drops_long_ones() -> None:
    s = LineSplitter()
    assert s.feed(b"1 2") == []
    assert s.feed(b" 3\n2 0 0\n1 ") == [b"1 2 3", b"2 0 0"]
    long = b"1 2 2 " + b"#" * 70000
    assert s.feed(b"4 5\n" + long[:1000]) == [b"1 4 5"]
    assert s.feed(long[1000:]) == []
    assert s.feed(b"\n1 7 7\n") == [b"1 7 7"]  # the long line's tail is dropped, not parsed
    assert s.feed(b"x" * (MAX_LINE + 1) + b"\n1 8 8\n") == [b"1 8 8"]


def test_control_dispatch() -> None:
    sizes: list[tuple[int, int]] = []
    reopened: list[bool] = []
    c = Control(lambda h, w: sizes.append((h, w)), lambda: reopened.append(True))
    for line in (b"1 24 80", b"2 0 0", b"3 1 1", b"1 -1 5", b"garbage"):
        c.on_ctl(line)
    c.on_winsz(b"10 20")
    assert sizes == [(24, 80), (10, 20)] and reopened == [True]
    no_tty = Control(None, lambda: None)
    no_tty.on_ctl(b"1 24 80")  # no pty: ignored without error
