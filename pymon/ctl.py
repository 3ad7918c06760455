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
# How long a new terminal-mode container's monitor waits, idle, for the engine's first
# size before it starts its tasks (cold: before it imports trio; warm: trio is loaded)
# (EarlyServer.wait_first_resize). podman 4.3.1 under busy loops on both cores sends it
# within ~100 ms of the pid message.
FIRST_RESIZE_WAIT = 1.0
# The early server's nice increment (it needs CAP_SYS_NICE). Every monitor on the host
# shares one cgroup (podman: <cgroup parent>/conmon), where other pymon monitors start up
# and import trio in Python; among them the early server must run at once when the size
# comes. It only waits in poll, and lives until its monitor's own tasks take over.
# bench/tty_race.py measures the race.
EARLY_SERVER_NICE = -10


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
        self.resized = False  # a size has been applied to the pty
        self.on_resized: Callable[[], None] | None = None  # called after each one

    def _resize(self, h: int, w: int) -> None:
        if self.resize is not None:
            self.resize(h, w)
            self.resized = True
            if self.on_resized is not None:
                self.on_resized()

    def on_ctl(self, line: bytes) -> None:
        parsed = parse_ctl(line)
        if parsed is None:
            log.warning("ctl: invalid message %r ignored", line[:64])
            return
        kind, h, w = parsed
        if kind == 1:
            self._resize(h, w)
        elif kind == 2:
            self.reopen()
        else:
            log.warning("ctl: unknown message type %d ignored", kind)

    def on_winsz(self, line: bytes) -> None:
        parsed = parse_winsz(line)
        if parsed is None:
            log.warning("winsz: invalid message %r ignored", line[:64])
        else:
            self._resize(*parsed)


def _waiting(fd: int) -> int:
    """Bytes waiting to be read on a pty master (or a pipe)."""
    import fcntl
    import sys
    import termios

    buf = bytearray(4)
    try:
        fcntl.ioctl(fd, termios.FIONREAD, buf)
    except OSError:
        return 0
    return int.from_bytes(buf, sys.byteorder)


def _tell(fd: int) -> None:
    try:
        os.write(fd, b"s")
    except OSError:
        pass  # the parent is gone, or stopped listening with the pipe full: nothing to tell


class EarlyServer:
    """Serves ctl/winsz between the pid message and the monitor's own tasks (terminal
    mode). The engine resizes the pty right after it gets the pid and then starts the
    container at once; a cold monitor's trio import takes ~100 ms, and a resize waiting that
    long arrives after the container has looked at its size (conmon's loop is already up).

    A forked process, not a thread: the main thread's import holds the GIL, and a thread
    lost this race now and then under load. The child holds only the fifos' read ends and
    the pty master; at `stop` it hands back its unfinished partial lines and whether a log
    reopen was asked for. It tells the parent, on a pipe, when it has applied a size (see
    `wait_first_resize`)."""

    def __init__(self, control: Control, ctl: tuple[int, int] | None,
                 winsz: tuple[int, int] | None, master: int) -> None:
        self.control = control
        self.master = master
        self.fifos = [(fds[0], lines, handle) for fds, lines, handle in (
            (ctl, control.ctl_lines, control.on_ctl),
            (winsz, control.winsz_lines, control.on_winsz)) if fds is not None]
        self.stop_r, self.stop_w = os.pipe2(os.O_CLOEXEC)
        self.result_r, result_w = os.pipe2(os.O_CLOEXEC)
        # non-blocking: a storm of resizes must not block the child on a full pipe
        self.resized_r, resized_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self.resized = control.resized  # sizes written before the pty arrived: applied
        self.pid = os.fork()
        if self.pid == 0:  # the child: serve until told to stop, then report and leave
            try:
                keep = {self.stop_r, result_w, resized_w, master,
                        *(fd for fd, _, _ in self.fifos)}
                import _signal

                from pymon.procattrs import close_fds_except

                close_fds_except(keep)
                for sig in (_signal.SIGTERM, _signal.SIGINT, _signal.SIGQUIT):
                    _signal.signal(sig, _signal.SIG_DFL)  # the monitor's to forward, not ours
                # Each reopen asked for is noted with the bytes then waiting in the pty:
                # the monitor relays those into the file being rotated away first, as a
                # monitor reading all along would have (conmon's loop does)
                reopen: list[int] = []
                control.reopen = lambda: reopen.append(_waiting(master))
                control.on_resized = lambda: _tell(resized_w)
                try:
                    os.nice(EARLY_SERVER_NICE)
                except OSError:
                    pass  # no CAP_SYS_NICE (rootless): the idle wait must do
                self._serve()
                leftover = b"\0".join(lines.buf for _, lines, _ in self.fifos)
                os.write(result_w, b" ".join(b"%d" % n for n in reopen) + b"\n" + leftover)
            finally:
                os._exit(0)
        os.close(result_w)
        os.close(resized_w)

    def wait_first_resize(self, container_pid: int, timeout: float = FIRST_RESIZE_WAIT) -> None:
        """Block, idle, until a size has been applied to the pty, the container has written
        to it or exited, or `timeout` seconds have passed.

        Called right after the pid message of a new container, before the monitor starts
        its tasks (cold: before it imports trio), in both modes. The engine starts the
        container at once and sends the size (`podman run -it`: from a goroutine,
        concurrently with `runc start`); the child must apply it before the container's
        first instruction. A cold monitor's import is ~100 ms of CPU in the child's own
        cgroup: run then, under load, it kept the child from being scheduled in time
        (bench/tty_race.py); a warm monitor has trio loaded, but starting its tasks is CPU
        there too. conmon is idle there.

        Once the container has written or exited, its first instruction is past and the race
        decided either way. The timeout bounds the wait when no size comes (no terminal on
        the engine's side, a detached or not yet started container): the monitor's tasks
        then start that much later; the container meanwhile runs, its output waits in the
        pty, and signals are forwarded by the launch path's handler."""
        if self.resized:
            return
        import select

        poller = select.poll()
        for fd in (self.resized_r, self.master):
            poller.register(fd, select.POLLIN)
        try:
            pidfd = os.pidfd_open(container_pid)  # a zombie's too: C is our child
        except OSError:
            pidfd = None  # gone, or not ours to see: the master's hang-up still ends the wait
        if pidfd is not None:
            poller.register(pidfd, select.POLLIN)
        try:
            poller.poll(int(timeout * 1000))
        finally:
            if pidfd is not None:
                os.close(pidfd)

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

    def stop(self) -> list[int]:
        """Hand over to the monitor: after this returns the child no longer reads. Returns
        the reopens asked for meanwhile, each as the number of bytes that were waiting in
        the pty when it was asked for (counted from the pty's first byte: nothing has
        read it yet). The caller relays that much, then reopens."""
        os.write(self.stop_w, b"x")
        result = b""
        while chunk := os.read(self.result_r, 65536):
            result += chunk
        for fd in (self.stop_r, self.stop_w, self.result_r, self.resized_r):
            os.close(fd)
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass  # the monitor's reaper got it first
        counts, _, leftover = result.partition(b"\n")  # partial lines hold no newline
        for (_, lines, _), rest in zip(self.fifos, leftover.split(b"\0")):
            lines.buf = rest  # the parent has read nothing since the fork
        return [int(n) for n in counts.split()]

