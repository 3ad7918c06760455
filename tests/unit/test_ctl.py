"""ctl/winsz line parsing (§7.2): each line judged on its own, bad ones ignored."""

from __future__ import annotations

import fcntl
import os
import signal
import struct
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pymon.ctl import (
    EARLY_SERVER_NICE,
    MAX_LINE,
    Control,
    EarlyServer,
    LineSplitter,
    parse_ctl,
    parse_winsz,
)
from pymon.monitor.setup import Undo, make_fifo, take_console
from tests.fakes.engine import wait_for


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


def readable(fd: int) -> int:
    buf = bytearray(4)
    fcntl.ioctl(fd, termios.FIONREAD, buf)
    return int.from_bytes(buf, "little")


# --- the early server's first-size wait (terminal mode, before trio) --------------------------

class Pty:
    """A pty whose master is given to take_console, as the runtime's would be, with the
    ctl/winsz fifos; the early server is stopped and everything closed afterwards."""

    def __init__(self, tmp_path: Path) -> None:
        self.master, self.slave = os.openpty()
        self.ctl = make_fifo(str(tmp_path / "ctl"), Undo())  # tmp_path goes with the test
        self.winsz = make_fifo(str(tmp_path / "winsz"), Undo())
        self.control = Control(None, lambda: None)
        self.server: EarlyServer | None = None

    def serve(self) -> EarlyServer:
        self.server = take_console(self.master, self.control, self.ctl, self.winsz)
        return self.server

    def size(self) -> tuple[int, int]:
        rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(self.slave, termios.TIOCGWINSZ,
                                                              b"\0" * 8))
        return rows, cols

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
        for fd in (self.master, self.slave, *self.ctl, *self.winsz):
            os.close(fd)


@pytest.fixture
def pty(tmp_path: Path) -> Iterator[Pty]:
    p = Pty(tmp_path)
    yield p
    p.close()


@pytest.fixture
def container() -> Iterator[int]:
    """A child that stands in for the container: lives until killed."""
    pid = os.fork()
    if pid == 0:
        signal.pause()
        os._exit(0)
    yield pid
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


@pytest.mark.timeout(10)
@pytest.mark.parametrize("fifo, line", [("ctl", b"1 40 132\n"), ("winsz", b"40 132\n")])
def test_first_resize_ends_the_wait_and_is_applied(pty: Pty, container: int, fifo: str,
                                                   line: bytes) -> None:
    server = pty.serve()
    # not a size: the wait goes on (the line is served: the reopen is handed back at stop)
    os.write(pty.ctl[1], b"2 0 0\ngarbage\n")
    t0 = time.monotonic()
    server.wait_first_resize(container, timeout=0.2)
    assert time.monotonic() - t0 >= 0.2 and pty.size() == (0, 0)
    os.write((pty.ctl if fifo == "ctl" else pty.winsz)[1], line)
    server.wait_first_resize(container, timeout=60)  # returns on the event, not the timeout
    assert pty.size() == (40, 132)
    # it serves ahead of the monitors around it where it may (root: CAP_SYS_NICE)
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    expected = max(-20, ours + EARLY_SERVER_NICE) if os.geteuid() == 0 else ours
    assert os.getpriority(os.PRIO_PROCESS, server.pid) == expected


@pytest.mark.timeout(10)
def test_a_reopen_is_handed_back_with_the_output_written_before_it(pty: Pty,
                                                                   container: int) -> None:
    """The monitor relays what the container wrote before a reopen into the file being
    rotated away, and only then reopens: stop() says how many bytes that was."""
    server = pty.serve()
    os.write(pty.slave, b"before")
    # The kernel moves a pty's bytes to the master side in a worker, after write() returns:
    # what the container wrote before the reopen is what the master can read by then.
    wait_for(lambda: readable(pty.master) == len(b"before"), what="the bytes at the master")
    # the resize after the reopen tells us the reopen has been served
    os.write(pty.ctl[1], b"2 0 0\n1 40 132\n")
    server.wait_first_resize(container, timeout=60)
    wait_for(lambda: pty.size() == (40, 132), what="the resize applied")
    os.write(pty.slave, b"after")
    wait_for(lambda: readable(pty.master) == len(b"beforeafter"), what="the bytes at the master")
    os.write(pty.ctl[1], b"2 0 0\n")
    os.write(pty.winsz[1], b"41 132\n")
    wait_for(lambda: pty.size() == (41, 132), what="the second resize applied")
    assert server.stop() == [len(b"before"), len(b"beforeafter")]
    pty.server = None
    assert os.read(pty.master, 100) == b"beforeafter"  # nothing was read by the server


@pytest.mark.timeout(10)
def test_a_size_written_before_the_pty_arrived_needs_no_wait(pty: Pty, container: int) -> None:
    os.write(pty.ctl[1], b"1 30 100\n")
    server = pty.serve()
    assert pty.size() == (30, 100)  # applied in take_console, before the server forks
    server.wait_first_resize(container, timeout=60)


@pytest.mark.timeout(10)
def test_output_ends_the_wait(pty: Pty, container: int) -> None:
    """The container has run: its first instruction is past, waiting longer wins nothing."""
    server = pty.serve()
    os.write(pty.slave, b"$ ")
    server.wait_first_resize(container, timeout=60)
    assert pty.size() == (0, 0)


@pytest.mark.timeout(10)
def test_container_exit_ends_the_wait(pty: Pty) -> None:
    server = pty.serve()
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    try:
        server.wait_first_resize(pid, timeout=60)  # a zombie: exited, not yet reaped
    finally:
        os.waitpid(pid, 0)


@pytest.mark.timeout(10)
def test_no_size_no_output_waits_out_the_timeout(pty: Pty, container: int) -> None:
    server = pty.serve()
    t0 = time.monotonic()
    server.wait_first_resize(container, timeout=0.3)
    assert time.monotonic() - t0 >= 0.3
    os.write(pty.ctl[1], b"1 10 20\n")  # the server still serves after the wait
    server.wait_first_resize(container, timeout=60)
    assert pty.size() == (10, 20)
