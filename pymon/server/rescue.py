"""The server's side of the rescue: when a warm monitor dies before recording its
container's exit (SIGKILL, the OOM killer), the server forks a replacement that finishes
the monitor's work (pymon/monitor/rescued.py).

What makes it possible: the server is the monitor's parent and a child subreaper, so the
container, once its monitor is gone, is re-parented to the server, which reaps it and hands
the status to the replacement; and every warm monitor sends the server, over a private
socketpair (pymon/server/rescuewire.py), the container pid and dups of its output pipes.
The pipes stay open while the server holds them, so what the container writes while nobody
reads waits in the pipe (the container blocks when it is full): nothing is lost but the
one chunk the monitor had read and not yet written.

Bookkeeping only in this module; the server's loop calls `readable` for channel fds and
`reaped` for every child it reaps.
"""

from __future__ import annotations

import os
import select
import socket
import sys
from collections.abc import Callable

from pymon.exitfile import exit_status
from pymon.reaper import is_child
from pymon.server import cgroups, rescuewire
from pymon.server.rescuewire import STATUS_SIZE, Job, describe
from pymon.server.twin import forked
from pymon.server.wire import Request


class Watch:
    """A warm monitor as the server knows it (the server's private, changing state)."""

    __slots__ = ("attempts", "cgroups", "code", "container_status", "done", "fds",
                 "monitor_pid", "registered", "req", "sock")

    def __init__(self, monitor_pid: int, sock: socket.socket, req: Request) -> None:
        self.monitor_pid = monitor_pid
        self.attempts = 0  # replacements forked for this container so far
        self.sock: socket.socket | None = sock
        self.req = req
        self.registered: rescuewire.Registered | None = None
        self.fds: list[tuple[str, int]] = []  # role, the server's dup
        self.code: int | None = None  # from EXITED: the monitor reaped the container
        self.container_status: int | None = None  # the server reaped the container
        self.done = False
        self.cgroups: str | None = None  # the monitor's /proc/PID/cgroup, at REGISTER

    def close_fds(self) -> None:
        for _, fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds = []


# Replacements per container: one killed in turn is replaced, but one that fails by itself
# (it exits rather than being killed) or keeps being killed is not replaced for ever
MAX_ATTEMPTS = 3


class Rescuer:
    def __init__(self, poller: select.poll, mounts: list[cgroups.Mount],
                 say: Callable[[str], None], debug: Callable[[str], None]) -> None:
        self.poller = poller
        self.mounts = mounts
        self.say = say  # the server's diagnostics
        self.debug = debug  # the same, with --verbose only
        self.enabled = True  # False when the server could not become a subreaper
        self.watches: dict[int, Watch] = {}  # monitor pid -> its watch
        self.channels: dict[int, Watch] = {}  # channel fd -> watch, while open
        self.containers: dict[int, Watch] = {}  # registered container pid -> watch
        # container pid -> its replacement's status pipe and watch
        self.waiting: dict[int, tuple[int, Watch]] = {}
        self.replacements: set[int] = set()
        self.rescued = 0

    def _say(self, text: str) -> None:
        self.say(text)

    # --- the channels ----------------------------------------------------------------

    def channel(self) -> tuple[socket.socket, socket.socket] | None:
        """A new channel: (the server's end, the monitor's end), both CLOEXEC."""
        if not self.enabled:
            return None
        try:
            return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        except OSError as e:
            self._say(f"no rescue channel: {e.strerror}")
            return None

    def watch(self, monitor_pid: int, ours: socket.socket, req: Request) -> None:
        self._add(Watch(monitor_pid, ours, req))

    def _add(self, w: Watch) -> None:
        assert w.sock is not None
        w.sock.setblocking(False)
        self.watches[w.monitor_pid] = w
        self.channels[w.sock.fileno()] = w
        self.poller.register(w.sock.fileno(), select.POLLIN)

    def owns(self, fd: int) -> bool:
        return fd in self.channels

    def readable(self, fd: int) -> None:
        w = self.channels.get(fd)
        if w is not None:
            self._drain(w)

    def _drain(self, w: Watch) -> None:
        """Read every queued message; at EOF (the monitor and everything that inherited
        its end are gone) the channel is closed."""
        while w.sock is not None:
            try:
                data, fds, flags, _ = socket.recv_fds(w.sock, rescuewire.MAX_MESSAGE,
                                                       rescuewire.MAX_FDS, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                self._say(f"rescue channel of monitor {w.monitor_pid}: {e.strerror}")
                data, fds, flags = b"", [], 0
            if not data:
                for fd in fds:
                    os.close(fd)
                self._close_channel(w)
                return
            try:
                if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
                    raise ValueError("truncated")
                msg = rescuewire.decode(data, len(fds))
            except ValueError as e:
                for fd in fds:
                    os.close(fd)
                self._say(f"monitor {w.monitor_pid} sent a bad rescue message: {e}")
                continue
            self._apply(w, msg, fds)

    def _apply(self, w: Watch, msg: rescuewire.Message, fds: list[int]) -> None:
        if isinstance(msg, rescuewire.Registered):
            if w.registered is not None:
                for fd in fds:
                    os.close(fd)
                return
            w.registered = msg
            w.fds = list(zip(msg.roles, fds))
            self.containers[msg.container_pid] = w
            self.debug(f"monitor {w.monitor_pid} registered container pid "
                       f"{msg.container_pid} ({len(fds)} fds)")
            try:
                with open(f"/proc/{w.monitor_pid}/cgroup") as f:
                    w.cgroups = f.read()
            except OSError:
                pass
        elif isinstance(msg, rescuewire.Exited):
            w.code = msg.code
            if w.registered is not None:  # reaped by its monitor: never ours
                self.containers.pop(w.registered.container_pid, None)
        else:  # Done: nothing left to rescue; the watch ends with the monitor's reap
            w.done = True
            w.close_fds()
            if w.registered is not None:
                self.containers.pop(w.registered.container_pid, None)
            self._close_channel(w)

    def _close_channel(self, w: Watch) -> None:
        if w.sock is not None:
            fd = w.sock.fileno()
            self.channels.pop(fd, None)
            self.poller.unregister(fd)
            w.sock.close()
            w.sock = None

    # --- reaping ---------------------------------------------------------------------

    def reaped(self, pid: int, status: int, monitor: bool = False) -> None:
        """Every child the server reaps: a monitor, a replacement, a container whose
        monitor died (re-parented to us), or another orphan. `monitor`: the server forked
        it as a monitor (or handed it a launch), so it is no container."""
        w = self.watches.pop(pid, None)
        if w is not None:
            self._drain(w)  # what it sent before it died is still queued
            self._close_channel(w)
            replacement = pid in self.replacements
            self.replacements.discard(pid)
            if w.registered is not None and not w.done:
                if w.attempts >= MAX_ATTEMPTS or (replacement and not os.WIFSIGNALED(status)):
                    self._say(f"replacement monitor {pid} {describe(status)} without "
                              f"recording the exit of container pid "
                              f"{w.registered.container_pid}; not replaced again")
                else:
                    self._rescue(w, status)
            elif replacement:
                self._say(f"replacement monitor {pid} {describe(status)}")
            elif not w.done and not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0):
                self.debug(f"monitor {pid} {describe(status)} before it registered a "
                           "container: nothing to rescue")
            w.close_fds()
            if w.registered is not None:
                waiting = self.waiting.get(w.registered.container_pid)
                if waiting is not None and waiting[1] is w:  # not replaced: nobody waits
                    os.close(waiting[0])
                    del self.waiting[w.registered.container_pid]
            return
        if monitor:
            # An exec session's (it has no channel): not a container, so no REGISTER to
            # look for. Without this, each of CRI-O's exec probes read every running
            # monitor's channel when it ended.
            return
        w = self.containers.get(pid)
        if w is None and pid not in self.waiting:
            for other in list(self.channels.values()):  # a REGISTER not read yet?
                self._drain(other)
            w = self.containers.get(pid)
        if w is not None:  # its monitor is dead too; reaped next
            del self.containers[pid]
            w.container_status = status
            return
        waiting = self.waiting.pop(pid, None)
        if waiting is not None:
            fd, w = waiting
            w.container_status = status  # for its own replacement, should it be killed
            try:
                os.write(fd, status.to_bytes(STATUS_SIZE, "big", signed=True))
            except OSError:
                pass  # the replacement is gone; its reap says so
            os.close(fd)

    def _rescue(self, w: Watch, monitor_status: int) -> None:
        assert w.registered is not None
        cpid = w.registered.container_pid
        self.containers.pop(cpid, None)
        stale = self.waiting.pop(cpid, None)  # a killed replacement's status pipe
        if stale is not None:
            os.close(stale[0])
        cid = _option(w.req.argv, b"-c", b"--cid")
        code = w.code
        if code is None and w.container_status is not None:
            code = exit_status(w.container_status)
        status_r = status_w = None
        if code is None:
            if is_child(cpid):
                status_r, status_w = os.pipe2(os.O_CLOEXEC)
            else:  # reaped by the monitor, which died before it could say so
                self._say(f"container {cid} (pid {cpid}) is gone and its status with it")
                code = -1
        channel = self.channel()
        job = Job(monitor_pid=w.monitor_pid, monitor_status=monitor_status, container_pid=cpid,
                  fds=tuple(w.fds), code=code, status_fd=status_r, req=w.req,
                  cgroups=w.cgroups, channel=channel[1].fileno() if channel else None)
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            pid = os.fork()
        except OSError as e:
            self._say(f"monitor {w.monitor_pid} of container {cid} {describe(monitor_status)}; "
                      f"no replacement: {e.strerror}")
            for fd in (status_r, status_w):
                if fd is not None:
                    os.close(fd)
            if channel is not None:
                channel[0].close()
                channel[1].close()
            return
        if pid == 0:
            def replace() -> int:
                from pymon.monitor import rescued

                return rescued.run(job, self.mounts)

            forked("replacement monitor", replace)
        # The replacement is watched as its monitor was: the dups move to its watch
        nw = Watch(pid, channel[0], w.req) if channel is not None else None
        if nw is not None and channel is not None:
            channel[1].close()
            nw.registered, nw.fds, w.fds = w.registered, w.fds, []
            nw.code, nw.container_status, nw.cgroups = code, w.container_status, w.cgroups
            nw.attempts = w.attempts + 1
            self._add(nw)
        if status_r is not None and status_w is not None:
            os.close(status_r)
            self.waiting[cpid] = (status_w, nw if nw is not None else w)
        self.replacements.add(pid)
        if w.attempts == 0:
            self.rescued += 1
        state = f"exit code {code}" if code is not None else "still running"
        self._say(f"monitor {w.monitor_pid} of container {cid} {describe(monitor_status)} "
                  f"before recording its exit; replacement monitor {pid} takes over "
                  f"(container pid {cpid}, {state})")

    def close(self) -> None:
        for w in list(self.watches.values()):
            self._close_channel(w)
            w.close_fds()
        self.watches.clear()
        self.containers.clear()
        for fd, _ in self.waiting.values():
            os.close(fd)  # replacements fall back to watching the container alone
        self.waiting.clear()


def _option(argv: list[bytes], *names: bytes) -> str:
    """An option's value in a conmon command line, for messages only."""
    for i, arg in enumerate(argv):
        for name in names:
            if arg == name and i + 1 < len(argv):
                return os.fsdecode(argv[i + 1])
            if arg.startswith(name + b"="):
                return os.fsdecode(arg[len(name) + 1:])
    return "?"
