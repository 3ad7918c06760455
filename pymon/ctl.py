"""The ctl and winsz fifos (§7): line parsing and what the lines do (no trio: the launch
path applies a resize written before the pty arrived, before the engine gets the pid).

`ctl` lines are `TYPE HEIGHT WIDTH`: type 1 resizes the pty, type 2 reopens the logs.
Every line is judged on its own; a bad one is ignored with a warning and never affects the
next. A line longer than MAX_LINE is dropped whole (conmon's 200-byte buffer: a very long
line must not be parsed from its head, which could look valid).
"""

from __future__ import annotations

import os

# Annotations are strings here (PEP 563), so Callable is needed by type checkers only; this
# module is on the start-up path and collections.abc costs ~1.5 ms to import.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

from pymon.diag import log

MAX_LINE = 199
MAX_SIZE = 1000  # conmon 2.2+: sizes outside 0..1000 are rejected


def _decimal(field: bytes) -> int | None:
    digits = field[1:] if field[:1] in (b"+", b"-") else field
    if not digits.isdigit():
        return None  # floats, hex, garbage
    return int(field)


def parse_ctl(line: bytes) -> tuple[int, int, int] | None:
    """`TYPE H W` (extra fields ignored) -> (type, h, w), or None if the line is invalid."""
    fields = line.split()
    if len(fields) < 3:
        return None
    kind, h, w = (_decimal(f) for f in fields[:3])
    if kind is None or h is None or w is None:
        return None
    if not (0 <= h <= MAX_SIZE and 0 <= w <= MAX_SIZE):
        return None
    return kind, h, w


def parse_winsz(line: bytes) -> tuple[int, int] | None:
    parsed = parse_ctl(b"1 " + line)
    return None if parsed is None else (parsed[1], parsed[2])


class LineSplitter:
    """Bytes in, complete lines out; over-long lines are dropped, up to their newline."""

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self.buf = b""
        self.skipping = False

    def feed(self, data: bytes) -> list[bytes]:
        self.buf += data
        lines: list[bytes] = []
        while True:
            nl = self.buf.find(b"\n")
            if nl < 0:
                if len(self.buf) > self.max_line:
                    self.buf = b""
                    if not self.skipping:
                        log.warning("ctl: line longer than %d bytes dropped", self.max_line)
                    self.skipping = True
                return lines
            line, self.buf = self.buf[:nl], self.buf[nl + 1:]
            if self.skipping:
                self.skipping = False  # the tail of a dropped line
                continue
            if len(line) > self.max_line:
                log.warning("ctl: line longer than %d bytes dropped", self.max_line)
                continue
            lines.append(line)


def read_pending(fd: int, splitter: LineSplitter) -> list[bytes]:
    """Complete lines waiting in the fifo now, without blocking."""
    lines: list[bytes] = []
    while True:
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return lines
        if not data:
            return lines
        lines += splitter.feed(data)


class Control:
    """What ctl and winsz lines do: resize the pty, reopen the logs."""

    def __init__(self, resize: Callable[[int, int], None] | None,
                 reopen: Callable[[], None]) -> None:
        self.resize = resize
        self.reopen = reopen
        # the fifos' partial lines, carried from the launch path into the monitor
        self.ctl_lines = LineSplitter()
        self.winsz_lines = LineSplitter()

    def on_ctl(self, line: bytes) -> None:
        parsed = parse_ctl(line)
        if parsed is None:
            log.warning("ctl: invalid message %r ignored", line[:64])
            return
        kind, h, w = parsed
        if kind == 1:
            if self.resize is not None:
                self.resize(h, w)
        elif kind == 2:
            self.reopen()
        else:
            log.warning("ctl: unknown message type %d ignored", kind)

    def on_winsz(self, line: bytes) -> None:
        parsed = parse_winsz(line)
        if parsed is None:
            log.warning("winsz: invalid message %r ignored", line[:64])
        elif self.resize is not None:
            self.resize(*parsed)


class EarlyServer:
    """Serves ctl/winsz between the pid message and the monitor's own tasks (terminal
    mode). The engine resizes the pty right after it gets the pid and then starts the
    container at once; trio's import takes ~100 ms, and a resize waiting that long arrives
    after the container has looked at its size (conmon's loop is already up).

    A forked process, not a thread: the main thread's import holds the GIL, and a thread
    lost this race now and then under load. The child holds only the fifos' read ends and
    the pty master; at `stop` it hands back its unfinished partial lines and whether a log
    reopen was asked for."""

    def __init__(self, control: Control, ctl: tuple[int, int] | None,
                 winsz: tuple[int, int] | None, master: int) -> None:
        self.control = control
        self.fifos = [(fds[0], lines, handle) for fds, lines, handle in (
            (ctl, control.ctl_lines, control.on_ctl),
            (winsz, control.winsz_lines, control.on_winsz)) if fds is not None]
        self.stop_r, self.stop_w = os.pipe2(os.O_CLOEXEC)
        self.result_r, result_w = os.pipe2(os.O_CLOEXEC)
        self.pid = os.fork()
        if self.pid == 0:  # the child: serve until told to stop, then report and leave
            try:
                keep = {self.stop_r, result_w, master, *(fd for fd, _, _ in self.fifos)}
                import _signal

                from pymon.procattrs import close_fds_except

                close_fds_except(keep)
                for sig in (_signal.SIGTERM, _signal.SIGINT, _signal.SIGQUIT):
                    _signal.signal(sig, _signal.SIG_DFL)  # the monitor's to forward, not ours
                reopen = []
                control.reopen = lambda: reopen.append(1)
                self._serve()
                leftover = b"\0".join(lines.buf for _, lines, _ in self.fifos)
                os.write(result_w, (b"R" if reopen else b"-") + leftover)
            finally:
                os._exit(0)
        os.close(result_w)

    def _serve(self) -> None:
        import select

        poller = select.poll()
        poller.register(self.stop_r, select.POLLIN)
        for fd, _, _ in self.fifos:
            poller.register(fd, select.POLLIN)
        while True:
            ready = [fd for fd, _ in poller.poll()]
            for fd, lines, handle in self.fifos:
                if fd in ready:
                    for line in read_pending(fd, lines):
                        handle(line)
            if self.stop_r in ready:
                return

    def stop(self) -> None:
        """Hand over to the monitor: after this returns the child no longer reads."""
        os.write(self.stop_w, b"x")
        result = b""
        while chunk := os.read(self.result_r, 65536):
            result += chunk
        for fd in (self.stop_r, self.stop_w, self.result_r):
            os.close(fd)
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass  # the monitor's reaper got it first
        if result[:1] == b"R":
            self.control.reopen()
        for (_, lines, _), rest in zip(self.fifos, result[1:].split(b"\0")):
            lines.buf = rest  # the parent has read nothing since the fork

