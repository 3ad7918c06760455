"""Reaping: M is a child subreaper, so the container's init (re-parented to us when the
runtime exits) and any orphan below it end up as our children (contract §8.1)."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

import trio

from pymon.diag import log


class Reaper:
    """On every SIGCHLD, reap all exited children; record the container's wait status."""

    def __init__(self, container_pid: int,
                 on_exit: Callable[[int], None] | None = None) -> None:
        self.container_pid = container_pid
        self.wait_status: int | None = None
        self.exited = trio.Event()
        self.on_exit = on_exit  # called with the wait status the moment it is known

    def _record(self, wait_status: int) -> None:
        self.wait_status = wait_status
        self.exited.set()
        if self.on_exit is not None:
            self.on_exit(wait_status)

    def sweep(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self._no_children()
                return
            if pid == 0:
                return
            if pid == self.container_pid and not self.exited.is_set():
                self._record(status)
            else:
                log.debug("reaped pid %d with status %d", pid, status)

    def _no_children(self) -> None:
        # The container is not our child (a runtime that did not leave it to us). If it is
        # gone, conmon assumes status 0; while it lives, `run` watches it with a pidfd.
        if self.exited.is_set():
            return
        try:
            os.kill(self.container_pid, 0)
        except ProcessLookupError:
            self._record(0)
        except PermissionError:
            pass

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with trio.open_signal_receiver(signal.SIGCHLD) as signals:
            task_status.started()
            self.sweep()  # children that exited before the receiver existed
            if not self.exited.is_set() and not is_child(self.container_pid):
                await self._watch_foreign()
                return
            async for _ in signals:  # after the container, orphans: until cancelled
                self.sweep()

    async def wait(self) -> None:
        """Until the container's exit is recorded. Our own child is reaped here, in the
        caller's task, as soon as its pidfd wakes it: through SIGCHLD it takes three of
        trio's rounds (the signal's callback, run's task, then the caller), each of which,
        after a give-back, copies pages again while the exit file waits. Its pid cannot be
        reused before we reap it, so the pidfd is the container's. A container that is not
        our child is left to run()."""
        if not self.exited.is_set() and is_child(self.container_pid):
            try:
                pidfd = os.pidfd_open(self.container_pid)
            except OSError:
                pidfd = None
            if pidfd is not None:
                try:
                    await trio.lowlevel.wait_readable(pidfd)
                finally:
                    os.close(pidfd)
                self.sweep()
        if not self.exited.is_set():  # Event.wait would cost a round even when set
            await self.exited.wait()

    async def _watch_foreign(self) -> None:
        try:
            pidfd = os.pidfd_open(self.container_pid)
        except ProcessLookupError:
            self._no_children()
            return
        try:
            await trio.lowlevel.wait_readable(pidfd)
        finally:
            os.close(pidfd)
        self._record(0)


def is_child(pid: int) -> bool:
    """Whether `pid` is our child, exited or not (not reaped yet)."""
    try:
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    return True


async def forward_signals(reaper: Reaper) -> None:
    """SIGTERM/SIGINT/SIGQUIT to M go to the container; M itself keeps running (§8.7)."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGQUIT) as signals:
        async for sig in signals:
            try:
                os.kill(reaper.container_pid, sig)
            except ProcessLookupError:
                reaper.sweep()
