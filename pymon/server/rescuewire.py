"""The rescue channel's messages: what a warm monitor tells its server so that the server
can finish its work if the monitor is killed (pymon/server/rescue.py).

One SOCK_SEQPACKET socketpair per warm monitor; the monitor sends, the server reads:

    REGISTER  container pid, one role letter per fd; SCM_RIGHTS: dups of the container's
              output read ends (or of the pty master) and of the attach socket's
              listener, in role order.
              Sent once the engine has the pid.
    EXITED    the container's exit code as it goes into the exit file: sent the moment the
              monitor has reaped it, so that a monitor killed while draining loses no code.
    DONE      the exit files are written and the exit command has been forked: nothing is
              left to rescue.

Pure: no fd is touched here (unit-tested without root). Import-light: plain bytes, no
struct, no msgspec (the monitor side is also reached by cold monitors' imports).
"""

from __future__ import annotations

import os

from pymon.cli import Frozen

TYPE_CHECKING = False  # annotations only (PEP 563)
if TYPE_CHECKING:
    from pymon.server.wire import Request

REGISTER = 0x52  # "R"
EXITED = 0x58  # "X"
DONE = 0x44  # "D"

# fd roles in a REGISTER message
STDOUT = "o"  # the container's stdout pipe, read end
STDERR = "e"  # the container's stderr pipe, read end
TTY = "t"  # the pty master
ATTACH = "a"  # the attach socket's listener
ROLES = frozenset((STDOUT, STDERR, TTY, ATTACH))
MAX_MESSAGE = 64
MAX_FDS = 3


class Registered(Frozen):
    __slots__ = ("container_pid", "roles")
    container_pid: int
    roles: str  # one letter per fd, in the order the fds came

    def __init__(self, container_pid: int, roles: str) -> None:
        self._init({"container_pid": container_pid, "roles": roles})


class Exited(Frozen):
    __slots__ = ("code",)
    code: int  # as in the exit file: exit code, 128+signal, or -1

    def __init__(self, code: int) -> None:
        self._init({"code": code})


class Done(Frozen):
    __slots__ = ()

    def __init__(self) -> None:
        pass


Message = Registered | Exited | Done


def encode_register(container_pid: int, roles: str) -> bytes:
    return bytes((REGISTER,)) + container_pid.to_bytes(4, "big") + roles.encode()


def encode_exited(code: int) -> bytes:
    return bytes((EXITED,)) + code.to_bytes(4, "big", signed=True)


def encode_done() -> bytes:
    return bytes((DONE,))


def decode(data: bytes, fd_count: int) -> Message:
    """One message; `fd_count` is how many fds came with it. Raises ValueError."""
    if not data:
        raise ValueError("empty message")
    kind, body = data[0], data[1:]
    if kind == REGISTER:
        if len(body) < 4:
            raise ValueError("short REGISTER")
        pid = int.from_bytes(body[:4], "big")
        try:
            roles = body[4:].decode("ascii")
        except UnicodeDecodeError:
            raise ValueError("REGISTER roles are not ASCII") from None
        if pid <= 0:
            raise ValueError(f"REGISTER with pid {pid}")
        if len(roles) != fd_count or len(set(roles)) != len(roles) or not set(roles) <= ROLES:
            raise ValueError(f"REGISTER roles {roles!r} do not match {fd_count} fds")
        if TTY in roles and (STDOUT in roles or STDERR in roles):
            raise ValueError("a pty master comes without output pipes")
        return Registered(pid, roles)
    if fd_count:
        raise ValueError("fds with a message that carries none")
    if kind == EXITED and len(body) == 4:
        return Exited(int.from_bytes(body, "big", signed=True))
    if kind == DONE and not body:
        return Done()
    raise ValueError(f"unknown message {data[:8]!r}")


# --- server -> replacement (a fork: nothing is serialized) ---------------------------

def describe(wait_status: int) -> str:
    if os.WIFSIGNALED(wait_status):
        return f"killed by signal {os.WTERMSIG(wait_status)}"
    if os.WIFEXITED(wait_status):
        return f"exited with status {os.WEXITSTATUS(wait_status)}"
    return f"wait status {wait_status:#x}"


class Job(Frozen):
    """What a replacement monitor is given (it is forked: nothing is serialized)."""

    __slots__ = ("cgroups", "channel", "code", "container_pid", "fds", "monitor_pid",
                 "monitor_status", "req", "status_fd")
    monitor_pid: int
    monitor_status: int  # how the monitor died (its wait status)
    container_pid: int
    fds: tuple[tuple[str, int], ...]  # role, fd: the container's stdio
    code: int | None  # the exit code, when known before the fork
    status_fd: int | None  # else: the server writes the container's wait status here
    channel: int | None  # the replacement's own rescue channel: it may be killed too
    req: Request  # the launcher's request: argv, environment, cwd, limits
    cgroups: str | None

    def __init__(self, **values: object) -> None:
        self._init(values)


STATUS_SIZE = 8  # the container's wait status, server -> replacement, signed big-endian
