"""The spare: the next monitor, forked before its launcher comes.

Forking the server takes ~0.5 ms on the launcher's time, and the forked child then copies
~450 of the server's pages (each a fault, ~3 us on these VMs) before it starts the runtime:
most of a warm ExecSync probe's lead over conmon's. So the server keeps one child forked
ahead. The spare runs the set-up's Python once on values that change nothing (its own
process state, the argv shapes engines pass: twin.rehearse), at SCHED_IDLE, so that it
has made most of its copies before any launcher waits on them, then waits on a
socketpair. The server hands it the next launch it has accepted and checked (the request's
bytes and its fds, SCM_RIGHTS), and the spare becomes that launcher's monitor as a freshly
forked child would (twin.run). The server forks the next spare once it has been idle for
a while (serve.py), not on a launcher's time.

A spare is not yet anyone's monitor: it dies with the server (PDEATHSIG), and drops that
once it takes a launch, since a monitor outlives its server.

The server's side is `Spare`; the child's is `wait_and_run`. The message: one flag byte
(1: the last fd is the rescue channel), then the request as the launcher sent it; its fds:
the launcher's connection, then the launcher's fds in the request's order.
"""

from __future__ import annotations

import _signal as signal
import array
import os
import resource
import socket

from pymon import _native, handover
from pymon.server import cgroups, twin
from pymon.server.peer import Self
from pymon.server.wire import decode_request

READY = b"R"
COMM = "pymon-spare"  # its name until it takes a launch (then its launcher's, as cold)
_WITH_CHANNEL = b"\x01"
_WITHOUT_CHANNEL = b"\x00"
_FD_SPACE = socket.CMSG_SPACE((handover.MAX_FDS + 2) * 4)  # + the connection, the channel


class Spare:
    """The server's handle on its spare: the child's pid and our end of its socketpair."""

    __slots__ = ("pid", "sock", "ready")

    def __init__(self, pid: int, sock: socket.socket) -> None:
        self.pid = pid
        self.sock = sock
        self.ready = False  # it has rehearsed and waits: a launch handed now starts at once

    def is_ready(self) -> bool:
        """Asked when a launch comes, not polled: a wake-up of the server per spare saved.
        False while it rehearses (a launch handed then would wait for it) or if it died."""
        if not self.ready:
            try:
                self.ready = self.sock.recv(16) == READY
            except OSError:  # BlockingIOError: still rehearsing
                pass
        return self.ready

    def hand(self, data: bytes, conn: int, received: list[int], channel: int | None) -> None:
        """Give the spare this launch. Raises OSError if it cannot take it (it died)."""
        fds = [conn, *received, *([channel] if channel is not None else [])]
        flag = _WITH_CHANNEL if channel is not None else _WITHOUT_CHANNEL
        self.sock.sendmsg([flag, data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                          array.array("i", fds))])

    def close(self) -> None:
        self.sock.close()


def fork_spare(mounts: list[cgroups.Mount], sample: bytes, idle: bool) -> Spare:
    """Fork a spare, which rehearses with `sample` (twin.sample_request()), at SCHED_IDLE
    if `idle` (can_leave_idle(), asked once by the server). Raises OSError if the fork or
    the socketpair fails."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    server = os.getpid()
    try:
        pid = _native.fork()  # not os.fork: see _native/_build.py
    except OSError:
        ours.close()
        theirs.close()
        raise
    if pid == 0:
        twin.forked("warm monitor", lambda: wait_and_run(theirs.fileno(), server, mounts,
                                                         sample, idle))
    theirs.close()
    ours.setblocking(False)
    return Spare(pid, ours)


def wait_and_run(sock: int, server: int, mounts: list[cgroups.Mount], sample: bytes,
                 idle: bool) -> int:
    """The spare's life: rehearse, say so, wait for a launch, then be its monitor."""
    _native.set_pdeathsig(signal.SIGKILL)  # nobody's monitor yet: nothing to lose
    if os.getppid() != server:
        return 0  # the server is already gone
    # Named at once, so that nobody takes it for a monitor (the rehearsal keeps the name:
    # its sample says it)
    with open("/proc/self/comm", "wb", buffering=0) as f:
        f.write(COMM.encode())
    twin.leave_server(keep=(sock,))
    # Rehearsed at SCHED_IDLE: the launch just handed to the previous spare runs on the
    # other CPU meanwhile, and goes first
    if idle:
        policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    twin.rehearse(sample)
    if idle:
        os.sched_setscheduler(0, policy, param)
    os.write(sock, READY)
    channel_sock = socket.socket(fileno=sock)
    try:
        data, ancdata, _, _ = channel_sock.recvmsg(1 + handover.MAX_REQUEST + 1, _FD_SPACE)
    except OSError:
        return 0
    finally:
        channel_sock.detach()  # the fd is closed with the server's others (twin.run)
    fds: list[int] = []
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            got = array.array("i")
            got.frombytes(payload[:len(payload) - len(payload) % got.itemsize])
            fds.extend(got)
    if not data or not fds:
        return 0  # the server closed our end: it is stopping
    _native.set_pdeathsig(0)  # a monitor now: it outlives the server
    channel = fds.pop() if data[:1] == _WITH_CHANNEL else None
    conn, received = fds[0], fds[1:]
    # The server decoded and checked these bytes before handing them over
    req = decode_request(data[1:], len(received))
    return twin.run(req, conn, received, mounts, channel)


def can_leave_idle(me: Self) -> bool:
    """Linux lets a process leave SCHED_IDLE only with CAP_SYS_NICE or an RLIMIT_NICE
    that allows its nice value (sched(7)): a server without either (rootless, say) does
    not rehearse its spares at SCHED_IDLE, since they would stay there as monitors. `me`:
    the server's capabilities and nice value, as read at its start."""
    if me.can_renice:
        return True
    soft, _ = resource.getrlimit(resource.RLIMIT_NICE)
    return soft == resource.RLIM_INFINITY or 20 - me.nice <= soft
