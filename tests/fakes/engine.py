"""A fake engine: launches pymon the way podman launches conmon (socketpairs for the sync,
start and attach pipes, passed as fds 3.. with _OCI_* variables), then talks to it."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

PYMON = [sys.executable, "-m", "pymon"]


class Session:
    """One pymon launch: P0's process, our ends of the three socketpairs."""

    def __init__(self, argv: list[str], *, env: dict[str, str] | None = None,
                 exec_attach: bool = False, extra_fds: list[int] = (),  # type: ignore[assignment]
                 cwd: str | None = None, send_start: bool = True,
                 conmon_pidfile: str | None = None, wrapper: list[str] = (),  # type: ignore[assignment]
                 stdout: object = subprocess.PIPE, stderr: object = subprocess.PIPE) -> None:
        self.sync, sync_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.start, start_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.attach = attach_child = None
        fds = list(extra_fds) + [sync_child.fileno(), start_child.fileno()]
        child_env = dict(os.environ if env is None else env)
        child_env["_OCI_SYNCPIPE"] = str(sync_child.fileno())
        child_env["_OCI_STARTPIPE"] = str(start_child.fileno())
        self.start_fd = start_child.fileno()  # its number in P0
        if exec_attach:
            self.attach, attach_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            fds.append(attach_child.fileno())
            child_env["_OCI_ATTACHPIPE"] = str(attach_child.fileno())
        self.conmon_pidfile = conmon_pidfile
        self.wrapper = list(wrapper)
        self.p0 = subprocess.Popen([*wrapper, *PYMON, *argv], env=child_env, pass_fds=fds, cwd=cwd,
                                   stdin=subprocess.DEVNULL, stdout=stdout,  # type: ignore[arg-type]
                                   stderr=stderr, process_group=0)  # type: ignore[arg-type]
        for s in (sync_child, start_child, attach_child):
            if s is not None:
                s.close()
        self.p0_stderr = b""
        if send_start:
            self.send_start()

    def send_start(self, data: bytes = b"\0") -> None:
        try:
            self.start.send(data)
        except BrokenPipeError:
            pass  # P0 failed before reading it, as podman 4.3.1 sees it

    def wait_p0(self, timeout: float = 10) -> int:
        _, err = self.p0.communicate(timeout=timeout)
        self.p0_stderr = err
        return self.p0.returncode

    def read_sync(self, timeout: float = 10) -> bytes:
        """One packet from the sync pipe, or b'' on EOF."""
        return _recv(self.sync, timeout)

    def read_attach_pipe(self, timeout: float = 10) -> bytes:
        assert self.attach is not None
        return _recv(self.attach, timeout)

    @property
    def monitor_pid(self) -> int:
        assert self.conmon_pidfile, "launch with -P to know the monitor's pid"
        return int(Path(self.conmon_pidfile).read_text())

    def wait_monitor(self, timeout: float = 20) -> None:
        """Wait until the monitor process has exited (it is not our child: use a pidfd)."""
        wait_pid_gone(self.monitor_pid, timeout)

    def close(self) -> None:
        for s in (self.sync, self.start, self.attach):
            if s is not None:
                s.close()
        if self.p0.poll() is None:
            self.p0.kill()
            self.p0.wait()
        for stream in (self.p0.stdout, self.p0.stderr):
            if stream is not None:
                stream.close()


def _recv(sock: socket.socket, timeout: float) -> bytes:
    ready, _, _ = select.select([sock], [], [], timeout)
    if not ready:
        raise TimeoutError(f"no packet within {timeout:.1f}s")
    return sock.recv(65536)


def ppid(pid: int) -> int | None:
    """`pid`'s parent, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rpartition(")")[2].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def children(pid: int) -> list[int]:
    """`pid`'s children (its main thread's), none once it is gone."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


SPARE_COMM = "pymon-spare"  # pymon/server/spare.py


def comm_of(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/comm").read_text().rstrip("\n")
    except OSError:
        return None


def monitors_of(server: int) -> list[int]:
    """A server's children but its spare (pymon/server/spare.py): the monitors it forked
    or handed a launch to, and what it reaped as a subreaper."""
    return [pid for pid in children(server) if comm_of(pid) != SPARE_COMM]


def spares_of(server: int) -> list[int]:
    return [pid for pid in children(server) if comm_of(pid) == SPARE_COMM]


def _waiting_for_a_launch(pid: int) -> bool:
    """A spare that has rehearsed sits in recvmsg(2) (x86_64: 47) on its socketpair."""
    try:
        return Path(f"/proc/{pid}/syscall").read_text().split()[0] == "47"
    except (OSError, IndexError):
        return False


def wait_for_spare(server: int, other_than: int | None = None, timeout: float = 10) -> int:
    """The server's spare (other than `other_than`) once it has rehearsed and waits for a
    launch. Polled: nothing outside the server tells when a spare is ready."""
    deadline = time.monotonic() + timeout
    while True:
        found = [pid for pid in spares_of(server) if pid != other_than
                 and _waiting_for_a_launch(pid)]
        if found:
            return found[0]
        if time.monotonic() > deadline:
            raise TimeoutError(f"server {server} has no spare (other than {other_than})")
        time.sleep(0.01)


def wait_pid_gone(pid: int, timeout: float) -> None:
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        if not select.select([fd], [], [], timeout)[0]:
            raise TimeoutError(f"process {pid} still running after {timeout}s")
    finally:
        os.close(fd)


def kill_if_alive(pid: int) -> bool:
    """SIGKILL `pid` if it still runs; True if it had to be killed."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    wait_pid_gone(pid, 10)
    return True


def wait_for(predicate, timeout: float = 10, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    """Poll a condition that has no event to wait on (a file written by another process)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.01)


def blocked_reading(pid: int, fd: int) -> bool:
    """`pid` sits in read(2) on `fd` (x86_64). Any read would not do: on a cold page cache
    a starting interpreter blocks in read(2) on its own modules, before it has installed
    the signal handlers a test is about to exercise."""
    call = Path(f"/proc/{pid}/syscall").read_text().split()
    return call[0] == "0" and int(call[1], 16) == fd


# x86_64 numbers of the calls a monitor blocks in while it waits for output: epoll_wait,
# epoll_pwait, epoll_pwait2, poll, ppoll
_WAITING_SYSCALLS = frozenset((232, 281, 441, 7, 271))


def sigkill_when_idle(pid: int, timeout: float = 10) -> None:
    """SIGKILL a monitor while it waits for the container's output, not between reading a
    chunk and writing it (that chunk would be lost with it: no monitor can keep it). The
    relay reads and writes with no wait in between, so a monitor in epoll_wait holds
    nothing. It is stopped (SIGSTOP) before /proc/PID/syscall is read, so that what that
    says still holds at the SIGKILL: a monitor that was only seen waiting could wake, read
    and be killed before it wrote. Stopped anywhere else, it is let go on (SIGCONT) and
    tried again. There is no event for "blocked in a syscall": bounded by `timeout`."""
    import platform

    deadline = time.monotonic() + timeout
    while platform.machine() == "x86_64":
        try:
            os.kill(pid, signal.SIGSTOP)
            while _state(pid) not in ("T", "t"):  # a stop is delivered in microseconds
                if time.monotonic() > deadline:
                    raise TimeoutError(f"process {pid} did not stop within {timeout}s")
            nr = Path(f"/proc/{pid}/syscall").read_text().split()[0]
        except (OSError, IndexError):
            break  # gone or unreadable: kill it as it is
        if nr.isdigit() and int(nr) in _WAITING_SYSCALLS:
            break
        os.kill(pid, signal.SIGCONT)
        if time.monotonic() > deadline:
            raise TimeoutError(f"process {pid} was never idle within {timeout}s")
        os.sched_yield()
    os.kill(pid, signal.SIGKILL)


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
