"""podman 4.3.1 end to end, with pymon as its conmon (see conftest.py for the set-up).

Each test checks exact bytes and exit codes as podman reports them. pymon being the
monitor is proven once per session (`podman info` reports the entry point) and, in every
test with a running container, by the container's ConmonPid running the entry point for
that container id.
"""

from __future__ import annotations

import array
import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.fakes.bundle import RUNC
from tests.fakes.engine import ppid, sigkill_when_idle, wait_pid_gone
from tests.fakes.journal import PrivateJournal
from tests.podman.conftest import IMAGE, LIMITS, Monitors, Podman, podman_available, runc_leftovers

pytestmark = [pytest.mark.podman,
              pytest.mark.skipif(not podman_available(),
                                 reason="needs root, podman, runc and busybox-static")]

MiB = 1 << 20
RECORD = re.compile(rb"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.(\d{9})([+-]\d\d:\d\d) "
                    rb"(stdout|stderr) ([FP]) (.*)", re.DOTALL)


# --- helpers ----------------------------------------------------------------------------------

def parse_log(data: bytes) -> list[tuple[bytes, bytes, bytes, bytes]]:
    """k8s-file records as (timestamp as podman prints it, stream, flag, content)."""
    assert data.endswith(b"\n") or data == b""
    out = []
    for line in data.split(b"\n")[:-1]:
        m = RECORD.fullmatch(line)
        assert m, f"malformed record {line[:200]!r}"
        out.append((podman_time(m.group(1), m.group(2), m.group(3)), m.group(4), m.group(5),
                    m.group(6)))
    return out


def podman_time(base: bytes, frac: bytes, offset: bytes) -> bytes:
    """The record's time as `podman logs --timestamps` prints it: podman 4.3.1's
    LogTimeFormat "2006-01-02T15:04:05.000000000Z07:00" (RFC 3339 with all nine digits
    kept), a zero offset written as Z."""
    return base + b"." + frac + (b"Z" if offset == b"+00:00" else offset)


def stream(records: list, name: bytes) -> list[tuple[bytes, bytes]]:
    return [(flag, content) for _, s, flag, content in records if s == name]


def log_records(podman: Podman, ctr: str) -> list[tuple[bytes, bytes, bytes, bytes]]:
    return parse_log(Path(podman.inspect(ctr, "{{.HostConfig.LogConfig.Path}}")).read_bytes())


def conmon_pid(podman: Podman, ctr: str) -> int:
    pid = int(podman.inspect(ctr, "{{.State.ConmonPid}}"))
    assert pid > 0
    return pid


def assert_exited(podman: Podman, ctr: str, code: int) -> None:
    """The container has exited with `code`. After the exit file is read podman 4.3.1 shows
    "stopped" until `podman container cleanup` (the exit command) has run, so poll. Before
    that it shows "running" with exit code 0 for as long as the monitor is recording the
    exit, which a `run` whose attach a fast monitor refused can ask about: wait for podman
    to have read the exit file before reading the code."""
    podman.wait_for(ctr, "{{.State.Status}}", ("stopped", "exited"))
    assert podman.inspect(ctr, "{{.State.ExitCode}}") == str(code)
    podman.wait_for(ctr, "{{.State.Status}} {{.State.ExitCode}}", f"exited {code}")


def assert_pymon_monitors(podman: Podman, monitors: Monitors, cid: str) -> int:
    """The running container's monitor is pymon, and the container's parent (warm or
    cold, re-parented to it when the runtime exited); returns its pid. A podman in another
    mount namespace (a private journald's) is refused by the server: its monitors are cold."""
    pid = conmon_pid(podman, cid)
    monitors.assert_is_monitor(pid, cid, warm=monitors.server is not None and not podman.prefix)
    ctr = int(podman.inspect(cid, "{{.State.Pid}}"))
    if ctr > 0:
        assert ppid(ctr) == pid, f"container {ctr}'s parent is not monitor {pid}"
    return pid


def read_until(fd: int, buf: bytearray, want: bytes, timeout: float = 20) -> None:
    """Read fd (a pipe or a pty master) into buf until buf contains `want`."""
    deadline = time.monotonic() + timeout
    while want not in buf:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise TimeoutError(f"wanted {want!r}, got {bytes(buf)[-500:]!r}")
        try:
            data = os.read(fd, 65536)
        except OSError:  # EIO: the pty's other side is closed
            data = b""
        if not data:
            raise EOFError(f"EOF; wanted {want!r}, got {bytes(buf)[-500:]!r}")
        buf += data


class Pty:
    """A pty as podman's stdin, stdout and stderr; we hold the master."""

    def __init__(self, podman: Podman, *args: str, rows: int = 24, cols: int = 80) -> None:
        self.master, self.slave = os.openpty()
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.proc = podman.popen(*args, stdin=self.slave, stdout=self.slave, stderr=self.slave,
                                 start_new_session=True)
        self.buf = bytearray()

    def close_slave(self) -> None:
        """Our copy of the slave: once closed, the master reads EIO after podman exits."""
        if self.slave >= 0:
            os.close(self.slave)
            self.slave = -1

    def wait_raw(self, timeout: float = 10) -> None:
        """Podman puts the terminal in raw mode before it copies stdin; typing earlier would
        be echoed and edited by the line discipline (and ctrl-q eaten by IXON)."""
        deadline = time.monotonic() + timeout
        while termios.tcgetattr(self.master)[3] & termios.ICANON:  # the slave's termios
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise TimeoutError(f"podman did not set raw mode; rc={self.proc.poll()}")
            time.sleep(0.005)

    def write(self, data: bytes) -> None:
        os.write(self.master, data)

    def read_until(self, want: bytes, timeout: float = 20) -> None:
        read_until(self.master, self.buf, want, timeout)

    def ask(self, data: bytes, answer: re.Pattern[bytes], timeout: float = 10) -> bytes:
        """Write, then read until `answer` matches what came after; returns its group 1."""
        mark = len(self.buf)
        self.write(data)
        deadline = time.monotonic() + timeout
        while not (m := answer.search(self.buf, mark)):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.master], [], [], left)[0]:
                raise TimeoutError(f"no {answer.pattern!r} in {bytes(self.buf[mark:])!r}")
            self.buf += os.read(self.master, 65536)
        return m.group(1)

    def read_to_eof(self, timeout: float = 20) -> bytes:
        self.close_slave()
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.master], [], [], left)[0]:
                raise TimeoutError(f"no EOF; got {bytes(self.buf)[-500:]!r}")
            try:
                data = os.read(self.master, 65536)
            except OSError:
                return bytes(self.buf)
            if not data:
                return bytes(self.buf)
            self.buf += data

    def wait(self, timeout: float = 20) -> int:
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.close_slave()
        os.close(self.master)


def proc_rchar(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("rchar: "):
            return int(line.split()[1])
    raise AssertionError("no rchar")


def tty_inq(fd: int) -> int:
    n = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, n)
    return n[0]


# --- 1. run: streams, exit codes, death by signal ---------------------------------------------

@pytest.mark.timeout(60)
@pytest.mark.parametrize("code", [0, 3, 42])
def test_run_keeps_stdout_and_stderr_apart_and_exit_code(podman: Podman, code: int) -> None:
    r = podman.run("--rm", "--name", f"streams{code}", IMAGE, "sh", "-c",
                   rf"echo out1; echo err1 >&2; printf 'out2\000\377'; printf err2 >&2; "
                   rf"exit {code}")
    assert (r.returncode, r.stdout, r.stderr) == (code, b"out1\nout2\x00\xff", b"err1\nerr2")
    assert podman.ok("ps", "-aq") == b""  # --rm


@pytest.mark.timeout(60)
def test_detached_container_killed_by_signal_gives_137(podman: Podman, monitors: Monitors) -> None:
    # sh is PID 1 of its pid namespace: only SIGKILL from outside ends it without a handler
    cid = podman.run_d("--name", "victim", IMAGE, "sh", "-c", "sleep 100 & wait")
    monitor = assert_pymon_monitors(podman, monitors, cid)
    assert podman.ok("kill", "-s", "KILL", "victim") == b"victim\n"
    assert podman.ok("wait", "victim") == b"137\n"
    assert_exited(podman, "victim", 137)
    wait_pid_gone(monitor, 20)


@pytest.mark.timeout(60)
def test_attached_run_killed_by_signal_returns_137(podman: Podman, monitors: Monitors) -> None:
    proc = podman.popen("run", *LIMITS, "--name", "attached-victim", IMAGE,
                        "sh", "-c", "echo up; sleep 100 & wait",
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        buf = bytearray()
        read_until(proc.stdout.fileno(), buf, b"up\n")
        cid = podman.inspect("attached-victim", "{{.Id}}")
        assert_pymon_monitors(podman, monitors, cid)
        assert podman.ok("kill", "attached-victim") == b"attached-victim\n"  # SIGKILL
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert (proc.returncode, bytes(buf) + out, err) == (137, b"up\n", b"")


# --- 2. run -d, logs, --timestamps, logs -f ---------------------------------------------------

@pytest.mark.timeout(60)
def test_detached_run_then_logs_and_timestamps(podman: Podman) -> None:
    cid = podman.run_d("--name", "logged", IMAGE, "sh", "-c",
                       "echo one; echo two >&2; echo three; printf 'four\\n' >&2; exit 0")
    assert podman.ok("wait", "logged") == b"0\n"
    r = podman("logs", "logged")
    assert (r.returncode, r.stdout, r.stderr) == (0, b"one\nthree\n", b"two\nfour\n")

    records = log_records(podman, cid)
    assert stream(records, b"stdout") == [(b"F", b"one"), (b"F", b"three")]
    assert stream(records, b"stderr") == [(b"F", b"two"), (b"F", b"four")]
    r = podman("logs", "--timestamps", "logged")
    assert r.returncode == 0
    assert r.stdout == b"".join(ts + b" " + c + b"\n" for ts, s, _, c in records if s == b"stdout")
    assert r.stderr == b"".join(ts + b" " + c + b"\n" for ts, s, _, c in records if s == b"stderr")
    assert re.fullmatch(rb"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}(Z|[+-]\d\d:\d\d) "
                        rb"(one|three)\n){2}", r.stdout), r.stdout


@pytest.mark.timeout(60)
def test_logs_follow_a_live_container(podman: Podman, monitors: Monitors) -> None:
    cid = podman.run_d("--name", "followed", IMAGE, "sh", "-c",
                       "echo one; until [ -e /tmp/go ]; do sleep 0.02; done; "
                       "echo two; echo err >&2; printf three")
    assert_pymon_monitors(podman, monitors, cid)
    follow = podman.popen("logs", "-f", "followed", stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE)
    try:
        assert follow.stdout is not None
        buf = bytearray()
        read_until(follow.stdout.fileno(), buf, b"one\n")
        assert follow.poll() is None  # still following
        assert podman.ok("exec", "followed", "sh", "-c", ": > /tmp/go") == b""
        out, err = follow.communicate(timeout=30)  # ends by itself once the container exits
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.communicate()
    assert (follow.returncode, bytes(buf) + out, err) == (0, b"one\ntwo\nthree", b"err\n")
    assert_exited(podman, "followed", 0)


# --- 3. partial lines, a 1 MiB line without newline -------------------------------------------

@pytest.mark.timeout(90)
def test_partial_lines_and_1mib_line_through_logs(podman: Podman) -> None:
    script = ("printf abc; sleep 0.3; printf 'def\\n'; "
              "head -c 1048576 /dev/zero | tr '\\000' x; sleep 0.3; printf ghi >&2")
    r = podman.run("--name", "partial", IMAGE, "sh", "-c", script, timeout=90)
    big = b"x" * MiB
    assert (r.returncode, r.stdout, r.stderr) == (0, b"abcdef\n" + big, b"ghi")
    r = podman("logs", "partial", timeout=90)
    assert (r.returncode, r.stdout, r.stderr) == (0, b"abcdef\n" + big, b"ghi")

    records = log_records(podman, "partial")
    out = stream(records, b"stdout")
    assert out[:2] == [(b"P", b"abc"), (b"F", b"def")]
    assert {flag for flag, _ in out[2:]} == {b"P"}  # no newline: partial records only
    assert b"".join(c for _, c in out[2:]) == big
    assert stream(records, b"stderr") == [(b"P", b"ghi")]


# --- 4. exec ----------------------------------------------------------------------------------

@pytest.mark.timeout(90)
def test_exec_exit_codes_stdin_tty_and_concurrency(podman: Podman, monitors: Monitors) -> None:
    cid = podman.run_d("--name", "execd", IMAGE, "sleep", "1000")
    monitor = assert_pymon_monitors(podman, monitors, cid)

    for code in (0, 1, 42):
        r = podman("exec", "execd", "sh", "-c", f"echo out{code}; echo err{code} >&2; exit {code}")
        assert (r.returncode, r.stdout, r.stderr) == (code, f"out{code}\n".encode(),
                                                      f"err{code}\n".encode())
    # an exec process is not its pid namespace's init: it can kill itself
    r = podman("exec", "execd", "sh", "-c", "echo dying; kill -9 $$")
    assert (r.returncode, r.stdout, r.stderr) == (137, b"dying\n", b"")

    r = podman("exec", "-i", "execd", "cat", input=b"data\n")
    assert (r.returncode, r.stdout, r.stderr) == (0, b"data\n", b"")
    payload = bytes(range(256)) * 1024 + b"no newline at the end"  # 256 KiB, every byte value
    r = podman("exec", "-i", "execd", "sh", "-c", "cat; echo; echo eof-seen >&2", input=payload)
    assert (r.returncode, r.stdout, r.stderr) == (0, payload + b"\n", b"eof-seen\n")

    # exec -t: the session gets its own pty, sized like ours
    pty = Pty(podman, "exec", "-t", "execd", "sh", "-c", "stty size; tty; exit 3",
              rows=33, cols=101)
    try:
        assert pty.read_to_eof() == b"33 101\r\n/dev/pts/0\r\n"
        assert pty.wait() == 3
    finally:
        pty.close()
    # exec -it: typed input reaches the session
    pty = Pty(podman, "exec", "-it", "execd", "sh", "-c", 'read x; echo "got:$x"; exit 4')
    try:
        pty.wait_raw()
        pty.write(b"hello\n")
        assert pty.read_to_eof() == b"hello\r\ngot:hello\r\n"
        assert pty.wait() == 4
    finally:
        pty.close()

    # several execs at once
    def one(i: int) -> tuple[int, bytes, bytes]:
        r = podman("exec", "execd", "sh", "-c", f"echo out-{i}; echo err-{i} >&2; exit {i}")
        return r.returncode, r.stdout, r.stderr

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(8)))
    assert results == [(i, f"out-{i}\n".encode(), f"err-{i}\n".encode()) for i in range(8)]

    # every exec monitor has exited; only the container's remains
    left = monitors.wait_until({monitor}, timeout=20)
    assert not left, monitors.describe(left)
    assert monitors.monitor_pids() == {monitor}
    assert podman.inspect("execd", "{{.State.Status}}") == "running"

    # a detached exec still running when the container stops: its monitor ends too
    out = podman.ok("exec", "-d", "execd", "sleep", "1000")
    assert re.fullmatch(rb"[0-9a-f]{64}\n", out), out
    session = out.decode().strip()
    exec_monitors = monitors.monitor_pids() - {monitor}
    assert len(exec_monitors) == 1, monitors.describe(monitors.pids())
    monitors.assert_is_monitor(exec_monitors.pop(), cid, session)
    assert podman.ok("stop", "-t", "0", "execd") == b"execd\n"
    assert_exited(podman, "execd", 137)
    left = monitors.wait_until(set(), timeout=20)
    assert not left, monitors.describe(left)


# --- 5. run -i: stdin and its EOF -------------------------------------------------------------

@pytest.mark.timeout(60)
def test_run_interactive_stdin_reaches_eof(podman: Podman) -> None:
    r = podman.run("-i", "--rm", IMAGE, "cat", input=b"abc")
    assert (r.returncode, r.stdout, r.stderr) == (0, b"abc", b"")
    # EOF reaches the container: cat returns and the script goes on
    r = podman.run("-i", "--rm", IMAGE, "sh", "-c", "cat; echo; echo after-eof; exit 6",
                   input=b"line1\nline2")
    assert (r.returncode, r.stdout, r.stderr) == (6, b"line1\nline2\nafter-eof\n", b"")
    # a pipe, as in `printf abc | podman run -i ... cat`
    printf = subprocess.Popen(["printf", "abc"], stdout=subprocess.PIPE)
    assert printf.stdout is not None
    try:
        r = podman.run("-i", "--rm", IMAGE, "cat", stdin=printf.stdout)
    finally:
        printf.stdout.close()
        printf.wait()
    assert (r.returncode, r.stdout, r.stderr) == (0, b"abc", b"")


# --- 6. run -t, attach, detach keys -----------------------------------------------------------

@pytest.mark.timeout(60)
def test_run_tty_interactive_shell(podman: Podman, monitors: Monitors) -> None:
    pty = Pty(podman, "run", "-it", "--rm", *LIMITS, "--name", "tty-sh", IMAGE, "sh")
    try:
        pty.wait_raw()
        pty.write(b"echo hi\n")
        pty.read_until(b"\r\nhi\r\n")
        cid = podman.inspect("tty-sh", "{{.Id}}")
        assert_pymon_monitors(podman, monitors, cid)
        pty.write(b"exit 5\n")
        pty.read_to_eof()
        assert pty.wait() == 5
    finally:
        pty.close()
    # byte-exact: the container's tty echoes, ONLCR turns \n into \r\n
    pty = Pty(podman, "run", "-it", "--rm", *LIMITS, IMAGE,
              "sh", "-c", 'read x; echo "got:$x"; exit 4')
    try:
        pty.wait_raw()
        pty.write(b"hello\n")
        assert pty.read_to_eof() == b"hello\r\ngot:hello\r\n"
        assert pty.wait() == 4
    finally:
        pty.close()
    # -t alone: output only, \n becomes \r\n, a last partial line arrives too
    pty = Pty(podman, "run", "-t", "--rm", *LIMITS, IMAGE, "sh", "-c",
              "printf 'a\\nb'; exit 2")
    try:
        assert pty.read_to_eof() == b"a\r\nb"
        assert pty.wait() == 2
    finally:
        pty.close()


@pytest.mark.timeout(120)
def test_run_tty_has_our_size_from_the_start(podman: Podman) -> None:
    """The container's first instruction sees our size, or none: never another one.

    podman 4.3.1 writes the size (`1 40 132` on ctl) from a goroutine as it attaches,
    concurrently with its `runc start`. The monitor applies it as soon as it is scheduled
    (ARCHITECTURE.md, invariant 20), but nothing orders podman's write before the
    container's first instruction, so on a busy machine the container may still find the
    pty's initial 0x0: conmon too (bench/tty_race.py counts both under load). What is
    guaranteed, and asserted: the first answer is our size or 0x0 (the monitor sets no
    size of its own), the size does arrive (each question below waits for its answer),
    and the session ends as the container decides."""
    answer = re.compile(rb"(?:^|\r\n)(\d+ \d+|stty: standard input)\r\n")
    lost = 0
    for _ in range(10):
        pty = Pty(podman, "run", "-it", "--rm", *LIMITS, IMAGE,
                  "sh", "-c", "stty size; while read x; do stty size; done; exit 4",
                  rows=40, cols=132)
        try:
            pty.wait_raw()
            pty.read_until(b"\r\n")
            first = answer.match(pty.buf)
            assert first, bytes(pty.buf)
            assert first.group(1) in (b"40 132", b"stty: standard input")
            size = first.group(1)
            lost += size != b"40 132"
            deadline = time.monotonic() + 10
            while size != b"40 132":  # the race was lost: the size must still come
                size = pty.ask(b"\n", answer)
                assert size in (b"40 132", b"stty: standard input"), size
                assert time.monotonic() < deadline, "the size never arrived"
            pty.write(b"\x04")  # ^D: EOF for the container's read (its tty is cooked)
            pty.read_to_eof()
            assert pty.wait() == 4
        finally:
            pty.close()
    print(f"{lost} of 10 first instructions ran before the size was applied")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["run", "exec"])
def test_terminal_resize_reaches_the_container(podman: Podman, monitors: Monitors,
                                               how: str) -> None:
    """podman forwards SIGWINCH as a resize through the monitor's ctl fifo."""
    loop = ["sh", "-c", "while read x; do stty size; done"]
    if how == "run":
        args = ["run", "-it", *LIMITS, "--name", "resized", IMAGE, *loop]
    else:
        podman.run_d("--name", "resized", IMAGE, "sleep", "1000")
        args = ["exec", "-it", "resized", *loop]
    answer = re.compile(rb"\r\n(\d+ \d+|stty: standard input)\r\n")
    pty = Pty(podman, *args, rows=24, cols=80)
    try:
        pty.wait_raw()
        # the initial size. exec: podman writes it before the process starts, so it is there
        # at once. run: test_run_tty_has_our_size_from_the_start checks that it is there at
        # once; here it only has to arrive
        deadline = time.monotonic() + 10
        while (size := pty.ask(b"a\n", answer)) != b"24 80":
            assert how == "run" and size == b"stty: standard input", size
            assert time.monotonic() < deadline, size
            time.sleep(0.01)
        assert_pymon_monitors(podman, monitors, podman.inspect("resized", "{{.Id}}"))
        fcntl.ioctl(pty.master, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 100, 0, 0))
        pty.proc.send_signal(signal.SIGWINCH)  # podman's stdin is no controlling tty
        # the resize is asynchronous (podman -> ctl fifo -> monitor -> ioctl): ask until seen
        deadline = time.monotonic() + 10
        while (size := pty.ask(b"b\n", answer)) != b"50 100":
            assert size == b"24 80" and time.monotonic() < deadline, size
            time.sleep(0.01)
    finally:
        pty.close()


@pytest.mark.timeout(60)
def test_attach_and_detach_with_keys(podman: Podman, monitors: Monitors) -> None:
    r = podman.run("-dit", "--name", "attachable", IMAGE, "sh")
    assert r.returncode == 0, r
    cid = r.stdout.decode().strip()
    # podman warns because our stdin is not a terminal; the container gets a pty anyway
    assert re.fullmatch(rb'time="[^"]+" level=warning msg="The input device is not a TTY. '
                        rb'The --tty and --interactive flags might not work properly"\n',
                        r.stderr), r
    monitor = assert_pymon_monitors(podman, monitors, cid)

    pty = Pty(podman, "attach", "--detach-keys", "ctrl-p,ctrl-q", "attachable")
    try:
        pty.wait_raw()
        pty.write(b"echo hi\n")
        pty.read_until(b"\r\nhi\r\n")
        # podman detaches only when each key comes in a read of its own: send ctrl-p, wait
        # until podman has read it (its read count grew and nothing is queued), then ctrl-q
        before = proc_rchar(pty.proc.pid)
        pty.write(b"\x10")
        deadline = time.monotonic() + 10
        while proc_rchar(pty.proc.pid) == before or tty_inq(pty.slave):
            assert time.monotonic() < deadline, "podman did not read ctrl-p"
            time.sleep(0.002)
        pty.write(b"\x11")
        assert pty.wait(20) == 0
        pty.read_to_eof()
    finally:
        pty.close()
    assert podman.inspect("attachable", "{{.State.Status}}") == "running"
    assert conmon_pid(podman, cid) == monitor
    monitors.assert_is_monitor(monitor, cid)

    # attach again and end the shell; podman 4.3.1's attach exits 0 when the container
    # ends (checked with Debian's conmon 2.1.6 too), `podman wait` has the status
    pty = Pty(podman, "attach", "attachable")
    try:
        pty.wait_raw()
        pty.write(b"exit 9\n")
        pty.read_to_eof()
        assert pty.wait() == 0
    finally:
        pty.close()
    assert podman.ok("wait", "attachable") == b"9\n"
    wait_pid_gone(monitor, 20)


# --- 7. stop ----------------------------------------------------------------------------------

@pytest.mark.timeout(60)
def test_stop_a_container_that_ignores_sigterm(podman: Podman, monitors: Monitors) -> None:
    cid = podman.run_d("--name", "stubborn", IMAGE, "sh", "-c",
                       'trap "" TERM; echo ready; while :; do sleep 0.1; done')
    podman.wait_logs("stubborn", b"ready\n")
    monitor = assert_pymon_monitors(podman, monitors, cid)
    start = time.monotonic()
    r = podman("stop", "-t", "1", "stubborn")
    elapsed = time.monotonic() - start
    assert (r.returncode, r.stdout) == (0, b"stubborn\n")
    assert re.fullmatch(rb'time="[^"]+" level=warning msg="StopSignal SIGTERM failed to stop '
                        rb'container stubborn in 1 seconds, resorting to SIGKILL"\n', r.stderr), r
    # podman waits up to 5 s for the exit file after the kill: it must come at once
    assert elapsed < 4.5, elapsed
    assert_exited(podman, "stubborn", 137)
    wait_pid_gone(monitor, 20)

    # a container that honours SIGTERM stops with its own status, well before the timeout
    cid = podman.run_d("--name", "polite", IMAGE, "sh", "-c",
                       'trap "exit 0" TERM; echo ready; while :; do sleep 0.1; done')
    podman.wait_logs("polite", b"ready\n")
    assert_pymon_monitors(podman, monitors, cid)
    start = time.monotonic()
    assert podman.ok("stop", "-t", "30", "polite") == b"polite\n"
    assert time.monotonic() - start < 10
    assert_exited(podman, "polite", 0)


# --- 8. kill -s, wait, --rm, ps -a ------------------------------------------------------------

@pytest.mark.timeout(60)
def test_kill_signal_wait_and_ps(podman: Podman, monitors: Monitors) -> None:
    cid = podman.run_d("--name", "trapper", IMAGE, "sh", "-c",
                       'trap "echo got-term; exit 7" TERM; echo ready; '
                       'while :; do sleep 0.05; done')
    podman.wait_logs("trapper", b"ready\n")
    assert_pymon_monitors(podman, monitors, cid)
    assert podman.ok("kill", "-s", "TERM", "trapper") == b"trapper\n"
    assert podman.ok("wait", "trapper") == b"7\n"
    assert podman.ok("wait", "trapper") == b"7\n"  # again, on the exited container
    r = podman("logs", "trapper")
    assert (r.returncode, r.stdout, r.stderr) == (0, b"ready\ngot-term\n", b"")
    ps = podman.ok("ps", "-a", "--filter", "name=^trapper$", "--format",
                   "{{.Names}}|{{.ExitCode}}|{{.Exited}}|{{.Status}}")
    assert re.fullmatch(rb"trapper\|7\|true\|Exited \(7\) [^\n]+ ago\n", ps), ps
    assert_exited(podman, "trapper", 7)
    assert podman.inspect("trapper", "{{.State.OOMKilled}}") == "false"


@pytest.mark.timeout(60)
def test_rm_attached_and_detached(podman: Podman) -> None:
    r = podman.run("--rm", "--name", "gone", IMAGE, "sh", "-c", "echo bye; exit 5")
    assert (r.returncode, r.stdout, r.stderr) == (5, b"bye\n", b"")
    assert podman("container", "exists", "gone").returncode == 1
    # detached: removal is the exit command's job (`podman container cleanup --rm`), which
    # pymon runs after the container exits
    podman.run_d("--rm", "--name", "gone-d", IMAGE, "sh", "-c", "exit 5")
    deadline = time.monotonic() + 20
    while (rc := podman("container", "exists", "gone-d").returncode) != 1:
        assert rc == 0 and time.monotonic() < deadline, rc
        time.sleep(0.05)
    assert podman.ok("ps", "-aq") == b""


@pytest.mark.timeout(60)
def test_start_again_gets_a_new_monitor_and_appends_to_the_log(podman: Podman) -> None:
    cid = podman.run_d("--name", "again", IMAGE, "sh", "-c", "echo run; exit 3")
    assert podman.ok("wait", "again") == b"3\n"
    r = podman("start", "-a", "again")
    assert (r.returncode, r.stdout, r.stderr) == (3, b"run\n", b"")
    r = podman("logs", "again")
    assert (r.returncode, r.stdout, r.stderr) == (0, b"run\nrun\n", b"")
    assert stream(log_records(podman, cid), b"stdout") == [(b"F", b"run"), (b"F", b"run")]


@pytest.mark.timeout(60)
def test_finished_at_is_when_the_container_exited(podman: Podman) -> None:
    # podman takes FinishedAt from the exit file's ctime: a late exit file shows here
    r = podman.run("--name", "timed", IMAGE, "sleep", "1")
    assert (r.returncode, r.stdout, r.stderr) == (0, b"", b"")
    started, finished = map(int, podman.inspect(
        "timed", "{{.State.StartedAt.UnixNano}} {{.State.FinishedAt.UnixNano}}").split())
    # StartedAt is taken after `runc start` returns, so a little less than 1 s is fine
    assert 0.9 <= (finished - started) / 1e9 < 1.5, (finished - started) / 1e9


# --- 9. log drivers ---------------------------------------------------------------------------

@pytest.mark.timeout(60)
def test_k8s_file_max_size_keeps_newest_lines(podman: Podman) -> None:
    # One write per line (the shell's echo), so every read of the pipe ends on a line and
    # every record is a whole line: seq's 4 KiB stdio writes end mid-line, and whether a
    # read sees a partial (P) record then depends on timing, which moves the restarts.
    r = podman.run("--name", "capped", "--log-opt", "max-size=1000", IMAGE, "sh", "-c",
                   "i=1000; while [ $i -le 3012 ]; do echo $i; i=$((i+1)); done")
    expected_all = b"".join(b"%04d\n" % i for i in range(1000, 3013))
    assert (r.returncode, r.stdout, r.stderr) == (0, expected_all, b"")
    assert podman.inspect("capped", "{{.HostConfig.LogConfig.Size}}") == "1kB"
    path = Path(podman.inspect("capped", "{{.HostConfig.LogConfig.Path}}"))
    data = path.read_bytes()
    # records are 50 bytes ("<35-char timestamp> stdout F NNNN\n"); before a record that
    # would take the file past 1000 bytes the file is started again (conmon truncates):
    # 20 records fit, so 2013 lines leave the last 13, 3000..3012
    lines = data.split(b"\n")[:-1]
    assert {len(line) + 1 for line in lines} == {50}
    assert len(data) <= 1000
    assert [c for _, _, _, c in parse_log(data)] == [b"%04d" % i for i in range(3000, 3013)]
    r = podman("logs", "capped")
    newest = b"".join(b"%04d\n" % i for i in range(3000, 3013))
    assert (r.returncode, r.stdout, r.stderr) == (0, newest, b"")


@pytest.mark.timeout(90)
def test_journald_log_driver(journald_podman: tuple[Podman, PrivateJournal],
                             monitors: Monitors) -> None:
    podman, journal = journald_podman
    script = ("echo one; echo two >&2; printf par; sleep 0.3; printf 'tial\\n'; "
              "echo until-ready; until [ -e /tmp/go ]; do sleep 0.02; done; printf tail")
    cid = podman.run_d("--name", "journaled", "--log-driver", "journald", IMAGE, "sh", "-c", script)
    podman.wait_logs("journaled", b"until-ready\n")
    assert_pymon_monitors(podman, monitors, cid)
    assert podman.ok("exec", "journaled", "sh", "-c", ": > /tmp/go") == b""
    assert podman.ok("wait", "journaled") == b"0\n"
    assert podman.inspect("journaled", "{{.HostConfig.LogConfig.Type}}") == "journald"

    r = podman("logs", "journaled")
    assert (r.returncode, r.stdout, r.stderr) == (0, b"one\npartial\nuntil-ready\ntail", b"two\n")

    entries = journal.entries(5, f"CONTAINER_ID_FULL={cid}")
    assert len(entries) == 5
    fields = ("MESSAGE", "PRIORITY", "CONTAINER_ID", "CONTAINER_ID_FULL", "CONTAINER_NAME",
              "SYSLOG_IDENTIFIER", "CONTAINER_PARTIAL_MESSAGE")
    got = [{k: e[k] for k in fields if k in e} for e in entries]
    common = {"CONTAINER_ID": cid[:12], "CONTAINER_ID_FULL": cid, "CONTAINER_NAME": "journaled",
              "SYSLOG_IDENTIFIER": "journaled"}
    # a partial piece is held until its newline, then sent as one entry; the last piece,
    # still partial at exit, is flagged
    assert [g for g in got if g["PRIORITY"] == "6"] == [
        {"MESSAGE": "one\n", "PRIORITY": "6", **common},
        {"MESSAGE": "partial\n", "PRIORITY": "6", **common},
        {"MESSAGE": "until-ready\n", "PRIORITY": "6", **common},
        {"MESSAGE": "tail", "PRIORITY": "6", "CONTAINER_PARTIAL_MESSAGE": "true", **common}]
    assert [g for g in got if g["PRIORITY"] == "3"] == [
        {"MESSAGE": "two\n", "PRIORITY": "3", **common}]

    # --log-opt tag: CONTAINER_TAG, and the tag is the syslog identifier
    cid = podman.run_d("--name", "tagged", "--log-driver", "journald", "--log-opt", "tag=mytag",
                       IMAGE, "echo", "tagged line")
    assert podman.ok("wait", "tagged") == b"0\n"
    r = podman("logs", "tagged")
    assert (r.returncode, r.stdout, r.stderr) == (0, b"tagged line\n", b"")
    (entry,) = journal.entries(1, f"CONTAINER_ID_FULL={cid}")
    assert {k: entry.get(k) for k in ("MESSAGE", "PRIORITY", "CONTAINER_TAG", "SYSLOG_IDENTIFIER",
                                      "CONTAINER_NAME")} == {
        "MESSAGE": "tagged line\n", "PRIORITY": "6", "CONTAINER_TAG": "mytag",
        "SYSLOG_IDENTIFIER": "mytag", "CONTAINER_NAME": "tagged"}


@pytest.mark.timeout(60)
def test_none_log_driver(podman: Podman) -> None:
    r = podman.run("--name", "silent", "--log-driver", "none", IMAGE, "sh", "-c",
                   "echo a; echo b >&2; exit 4")
    # attached: the output still comes through the attach socket
    assert (r.returncode, r.stdout, r.stderr) == (4, b"a\n", b"b\n")
    assert podman.inspect("silent", "{{.HostConfig.LogConfig.Type}}") == "none"
    r = podman("logs", "silent")
    # podman 4.3.1 refuses, exit 125
    assert (r.returncode, r.stdout, r.stderr) == (
        125, b"", (b"Error: this container is using the 'none' log driver, cannot read logs: "
                   b"this container is not logging output\n"))


@pytest.mark.timeout(60)
def test_passthrough_log_driver(podman: Podman) -> None:
    # with passthrough the container's stdio *is* podman's: the container sees our pipes
    r = podman.run("--name", "direct", "--log-driver", "passthrough", IMAGE, "sh", "-c",
                   "readlink /proc/self/fd/1; readlink /proc/self/fd/2 >&2; exit 3")
    assert r.returncode == 3, r
    assert re.fullmatch(rb"pipe:\[\d+\]\n", r.stdout), r
    assert re.fullmatch(rb"pipe:\[\d+\]\n", r.stderr), r
    assert r.stdout != r.stderr
    # prove they are the very pipes subprocess gave podman: compare inodes
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        proc = podman.popen("run", *LIMITS, "--name", "direct2", "--log-driver",
                            "passthrough", IMAGE, "sh", "-c",
                            "readlink /proc/self/fd/1; readlink /proc/self/fd/2 >&2; exit 0",
                            stdout=out_w, stderr=err_w)
        os.close(out_w)
        os.close(err_w)
        out_w = err_w = -1
        assert proc.wait(30) == 0
        out = read_all(out_r)
        err = read_all(err_r)
        assert out == b"pipe:[%d]\n" % os.fstat(out_r).st_ino
        assert err == b"pipe:[%d]\n" % os.fstat(err_r).st_ino
    finally:
        for fd in (out_r, out_w, err_r, err_w):
            if fd >= 0:
                os.close(fd)
    r = podman("logs", "direct")
    assert (r.returncode, r.stdout, r.stderr) == (
        125, b"", (b"Error: this container is using the 'passthrough' log driver, cannot read "
                   b"logs: this container is not logging output\n"))


def read_all(fd: int, timeout: float = 20) -> bytes:
    buf = bytearray()
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise TimeoutError(f"no EOF; got {bytes(buf)!r:.300}")
        data = os.read(fd, 65536)
        if not data:
            return bytes(buf)
        buf += data


# --- 10. OOM ----------------------------------------------------------------------------------

@pytest.mark.timeout(60)
def test_oom_killed(podman: Podman) -> None:
    r = podman.run("--name", "hog", "--memory", "16m", IMAGE, "sh", "-c", "tail /dev/zero")
    assert (r.returncode, r.stdout, r.stderr) == (137, b"", b"")
    assert_exited(podman, "hog", 137)
    assert podman.inspect("hog", "{{.State.OOMKilled}}") == "true"
    # the same kill without OOM is not reported as OOM
    cid = podman.run_d("--name", "not-hog", "--memory", "16m", IMAGE, "sleep", "100")
    assert podman.ok("kill", "not-hog") == b"not-hog\n"
    assert podman.ok("wait", "not-hog") == b"137\n"
    assert podman.inspect(cid, "{{.State.OOMKilled}} {{.State.ExitCode}}") == "false 137"


EARLY_START_RUNTIME = """#!/bin/sh
# runc, except that `create` also starts the container and waits until it has died, and
# `start` of a container that is not "created" any more does nothing. The monitor then
# gets the pid of a container that has already been OOM-killed: the race between podman
# starting the container as soon as it has the pid and the monitor arming its OOM watch
# after sending it, with the container always first.
for a in "$@"; do last="$a"; done
state() {{ {runc} state "$last" 2>/dev/null | grep -o '"status": "[a-z]*"'; }}
case " $* " in
*" create "*)
    {runc} "$@" || exit $?
    {runc} start "$last" || exit $?
    i=0
    while [ $i -lt 500 ]; do
        case "$(state)" in *stopped*) exit 0;; esac
        sleep 0.02; i=$((i + 1))
    done
    exit 0;;
*" start "*)
    case "$(state)" in *created*) exec {runc} "$@";; esac
    exit 0;;
esac
exec {runc} "$@"
"""


@pytest.mark.timeout(60)
def test_oom_kill_before_the_monitor_watches(other_podman: Callable[..., Podman],
                                             monitors: Monitors, tmp_path: Path) -> None:
    """An OOM kill between the pid message and the monitor arming its cgroup v1 watch (see
    EARLY_START_RUNTIME) must still give OOMKilled: the container's fresh memory cgroup
    counts it in memory.oom_control's oom_kill."""
    wrapper = tmp_path / "runc-early-start"
    wrapper.write_text(EARLY_START_RUNTIME.format(runc=RUNC))
    wrapper.chmod(0o755)
    podman = other_podman(runtime=str(wrapper))
    r = podman.run("--name", "early-hog", "--memory", "16m", IMAGE, "sh", "-c", "tail /dev/zero")
    if monitors.server is None:
        assert (r.returncode, r.stdout, r.stderr) == (137, b"", b"")
    else:
        # A warm monitor has its loop running when it sends the pid: it may have recorded
        # this already-dead container's exit and closed its attach socket (podman: 126,
        # connection refused), or removed it too (127, no such file), before `run`
        # attaches (a cold one is still importing trio). The exit and the OOM kill are
        # what must not be lost.
        assert (r.returncode, r.stdout) in ((137, b""), (126, b""), (127, b"")), r
        assert r.returncode == 137 or r.stderr.endswith(
            b"connection refused\n" if r.returncode == 126 else b"no such file or directory\n"), r
    try:
        assert_exited(podman, "early-hog", 137)
    except TimeoutError:
        # podman gave up at the attach (126, 127: the warm monitor had recorded the exit
        # and closed its socket), before its `start`, and then may keep the container
        # "created" for good: it reads no exit for a container it never started
        assert r.returncode != 137 and podman.inspect("early-hog", "{{.State.Status}}") == \
            "created", r
        return
    assert podman.inspect("early-hog", "{{.State.OOMKilled}}") == "true"


# --- 11. restart policy -----------------------------------------------------------------------

@pytest.mark.timeout(90)
def test_restart_on_failure(podman: Podman, monitors: Monitors) -> None:
    # podman 4.3.1 restarts from `podman container cleanup`, the exit command pymon runs
    podman.run_d("--name", "flaky", "--restart", "on-failure:2", IMAGE, "sh", "-c",
                 "echo run; exit 1")
    podman.wait_for("flaky", "{{.RestartCount}} {{.State.Status}} {{.State.ExitCode}}",
                    "2 exited 1", timeout=40)
    # three runs: the first and two restarts, each with its own monitor
    r = podman("logs", "flaky")
    assert (r.returncode, r.stdout, r.stderr) == (0, b"run\nrun\nrun\n", b"")

    # a restart that stays up: its monitor is pymon, and it is not a child of the previous
    # monitor (conmon leaves subreaper mode before it forks the exit command, so the new
    # monitor is re-parented like any other, to init or to our nearest subreaper)
    cid = podman.run_d("--name", "second-time", "--restart", "on-failure:2", IMAGE, "sh", "-c",
                       "if [ -e /marker ]; then echo second; exec sleep 1000; fi; "
                       ": > /marker; echo first; exit 1")
    podman.wait_for("second-time", "{{.RestartCount}} {{.State.Status}}", "1 running", timeout=40)
    podman.wait_logs("second-time", b"first\nsecond\n")
    monitor = assert_pymon_monitors(podman, monitors, cid)
    parent = ppid(monitor)
    parent_argv = Path(f"/proc/{parent}/cmdline").read_bytes()
    assert str(monitors.entry).encode() not in parent_argv, (parent, parent_argv[:300])
    assert parent not in monitors.pids()


# --- 12. many containers at once --------------------------------------------------------------

@pytest.mark.timeout(120)
def test_twenty_containers_in_parallel(podman: Podman, monitors: Monitors) -> None:
    names = [f"par{i:02d}" for i in range(20)]

    def start(name: str) -> str:
        return podman.run_d("--name", name, IMAGE, "sh", "-c",
                            f"echo {name}; while :; do sleep 0.1; done")

    with ThreadPoolExecutor(20) as pool:
        cids = list(pool.map(start, names))
    running = podman.ok("inspect", "--format", "{{.Name}} {{.State.Status}}", *names)
    assert running.decode().splitlines() == [f"{n} running" for n in names]
    assert sorted(podman.ok("ps", "-q", "--no-trunc").decode().split()) == sorted(cids)
    pids = {}
    for name, cid in zip(names, cids):
        pids[name] = assert_pymon_monitors(podman, monitors, cid)
    found = monitors.monitor_pids()
    assert found == set(pids.values()), monitors.describe(found - set(pids.values()))
    for name in names:
        podman.wait_logs(name, f"{name}\n".encode())

    with ThreadPoolExecutor(20) as pool:
        stopped = list(pool.map(lambda name: podman.ok("stop", "-t", "0", name), names))
    assert stopped == [f"{n}\n".encode() for n in names]
    states = podman.ok("ps", "-a", "--format", "{{.Names}} {{.ExitCode}}")
    # stop -t 0 sends SIGKILL at once
    assert sorted(states.decode().splitlines()) == [f"{n} 137" for n in names]
    left = monitors.wait_until(set(), timeout=30)
    assert not left, monitors.describe(left)


# --- 13. a killed monitor ---------------------------------------------------------------------

@pytest.mark.timeout(180)
def test_killed_monitor_is_rescued(podman: Podman, monitors: Monitors) -> None:
    """SIGKILL the monitor (as the OOM killer would) while the container writes a line every
    ~2 ms: the server's replacement keeps the log complete, `podman wait` gets the real
    exit code, and `podman rm` leaves no runc state. A container whose monitor was killed
    still stops at once. conmon (and a cold pymon) lose all of it: there is no parent left
    to rescue them (containers/podman#19629)."""
    if monitors.server is None:
        pytest.skip("a cold monitor has no server to rescue it (neither has conmon)")
    lines = 1500
    cid = podman.run_d("--name", "orphaned", IMAGE, "sh", "-c",
                       f"i=0; while [ $i -lt {lines} ]; do echo line-$i; i=$((i+1)); "
                       "sleep 0.002; done; exit 7")
    podman.wait_logs("orphaned", b"line-100\n")
    monitor = assert_pymon_monitors(podman, monitors, cid)
    sigkill_when_idle(monitor)  # not between reading a chunk and writing it
    monitors.server.wait_for(b"takes over")
    assert podman.ok("wait", "orphaned", timeout=60) == b"7\n"
    r = podman("logs", "orphaned")
    assert (r.returncode, r.stderr) == (0, b"")
    assert r.stdout == "".join(f"line-{i}\n" for i in range(lines)).encode()
    assert all(flag == b"F" for flag, _ in stream(log_records(podman, cid), b"stdout"))
    assert_exited(podman, "orphaned", 7)
    assert podman.ok("rm", "orphaned") == b"orphaned\n"
    assert runc_leftovers(podman) == []

    # a long-running container whose monitor was killed: `podman stop` returns at once
    cid = podman.run_d("--name", "stoppable", IMAGE, "sh", "-c",
                       'trap "exit 0" TERM; echo ready; while :; do sleep 0.1; done')
    podman.wait_logs("stoppable", b"ready\n")
    monitor = assert_pymon_monitors(podman, monitors, cid)
    os.kill(monitor, signal.SIGKILL)
    monitors.server.wait_for(b"container " + cid.encode() + b" killed by signal 9")
    wait_pid_gone(monitor, 10)
    start = time.monotonic()
    assert podman.ok("stop", "-t", "30", "stoppable") == b"stoppable\n"
    assert time.monotonic() - start < 10
    assert_exited(podman, "stoppable", 0)
    assert podman.ok("rm", "stoppable") == b"stoppable\n"
    assert runc_leftovers(podman) == []
