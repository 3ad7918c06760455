"""The monitor M once the engine has the container pid: the room to read first.

One nursery holds the whole life of the container:

    reaper (SIGCHLD)  signal forwarder  stdout relay  stderr relay
          |
    container exited -> relays drain to EOF (bounded by DRAIN_DEADLINE) -> nursery ends

then, in this order (the ordering invariants of ARCHITECTURE.md):
    logs flushed and fsynced -> engine fds closed -> exit files -> exec exit message.
Unless an attach client still has output to take, that is done at once, inside trio,
before the tasks unwind: their unwinding and trio's teardown (~0.7 ms) are not on the
engine's way to the exit file. Otherwise the tasks are stopped, the clients are given
their output (bounded) and closed, and the exit is recorded then.
The exit command runs after `run` returns (monitor/setup.py), outside trio.
"""

from __future__ import annotations

import math
import os
import time
import traceback
from collections.abc import Awaitable, Callable

import trio

from pymon import _native, proctree, sync
from pymon.attach import AttachServer, Stdin
from pymon.config import Config
from pymon.ctl import LineSplitter, read_pending
from pymon.diag import log
from pymon.exitfile import exit_status, write_exit_files
from pymon.logformat import STDERR, STDOUT
from pymon.logs import K8sFileLog, LogSink, Sinks
from pymon.monitor import givingback
from pymon.monitor.launched import Launched
from pymon.notify import relay_notify
from pymon.reaper import Reaper, forward_signals
from pymon.status import State, gather, report_on_sigusr1
from pymon.stdio import Relay, pump

# After the container's pid exits, processes it left behind may hold its output pipes. We
# keep relaying until EOF while they write, but stop waiting once the pipes have been
# quiet for DRAIN_IDLE, and after DRAIN_DEADLINE in any case (podman waits 5 s for the
# exit file). Whatever is in the pipes then is still read.
DRAIN_DEADLINE = 2.0
DRAIN_IDLE = 0.2
# How long attach clients get, after the container's exit, to take the output queued for
# them before they are closed (a client that is reading finishes in far less).
ATTACH_FLUSH_DEADLINE = 2.0


class Monitor:
    def __init__(self, launched: Launched) -> None:
        self.l = launched
        self.config = launched.config
        opts = self.config.opts
        self.sinks = Sinks(make_sinks(self.config, launched.log_fd))
        lifeline = launched.lifeline
        self.reaper = Reaper(launched.container_pid, None if lifeline is None else
                             lambda status: lifeline.exited(exit_status(status)))
        self.stdin = Stdin(launched.stdin_fd) if launched.stdin_fd is not None else None
        self.attach = None
        if launched.attach is not None:
            self.attach = AttachServer(launched.attach.fd, self.stdin,
                                       close_stdin_on_eof=opts.stdin and not opts.leave_stdin_open)
        fanout = self.attach.broadcast if self.attach is not None else None
        self.relays = [Relay(fd, stream, self.sinks, fanout)
                       for fd, stream in ((launched.stdout_fd, STDOUT), (launched.stderr_fd, STDERR))
                       if fd is not None]
        self.control = launched.control
        self.control.reopen = self.sinks.reopen
        self.oom = launched.oom  # set up right after the pid message (launch.py)
        self.timed_out = False
        self.recorded: int | None = None  # the status record_exit() returned

    def state(self) -> State:
        """For the SIGUSR1 report."""
        return gather(self.l.container_pid, not self.reaper.exited.is_set(), self.relays,
                      self.attach, self.sinks, givingback.stats())

    def _backpressure(self) -> Awaitable[None] | None:
        if self.attach is not None and self.attach.lagging():
            return self.attach.wait_for_room()
        return None

    async def run(self) -> int:
        """The container's life; returns its exit status once its output is drained and
        every attach client has been given it and closed."""
        async with trio.open_nursery() as clients:
            # attach clients outlive the container's tasks: they get the final output
            if self.attach is not None:
                self.attach.accept_pending()
                clients.start_soon(self.attach.serve)
            async with trio.open_nursery() as nursery:
                await nursery.start(self.reaper.run)
                nursery.start_soon(forward_signals, self.reaper)
                nursery.start_soon(report_on_sigusr1, self.state)
                nursery.start_soon(pump, self.relays, self._backpressure)
                if self.l.early_ctl is not None:
                    # from here on the tasks below serve the fifos; a reopen asked for
                    # meanwhile comes after the output the container had written by then
                    seen = 0
                    for waiting in self.l.early_ctl.stop():
                        if self.relays:
                            self.relays[0].relay_upto(waiting - seen)  # the pty's relay
                            seen = max(seen, waiting)
                        self.control.reopen()
                if self.l.ctl_fds is not None:
                    nursery.start_soon(serve_fifo, self.l.ctl_fds[0], self.control.ctl_lines,
                                       self.control.on_ctl)
                if self.l.winsz_fds is not None:
                    nursery.start_soon(serve_fifo, self.l.winsz_fds[0], self.control.winsz_lines,
                                       self.control.on_winsz)
                nursery.start_soon(self.oom.run)
                if self.l.notify_fd is not None and self.config.opts.sdnotify_socket:
                    nursery.start_soon(relay_notify, self.l.notify_fd,
                                       self.config.opts.sdnotify_socket)
                t = self.config.opts.timeout or 0  # None: no -T
                timeout = float(t) if t > 0 else math.inf  # no -T: none
                if timeout < math.inf:  # armed when the pid was sent (§8.6), not now
                    timeout = max(0.0, timeout - (time.monotonic() - self.l.pid_sent_at))
                with trio.move_on_after(timeout) as timer:
                    await self.reaper.wait()
                if timer.cancelled_caught:
                    self.timed_out = True
                    # unlike conmon, nothing of it is left running or unreaped (proctree)
                    left = await proctree.kill_and_reap(self.l.container_pid,
                                                        self.reaper.sweep)
                    if left:
                        log.warning("processes still not reaped after the timeout: %s", left)
                    if self.l.lifeline is not None:
                        self.l.lifeline.exited(-1)
                else:
                    await wait_for_eof(self.relays)
                # No task of the nursery runs until our next checkpoint: pump is between
                # two reads, so draining here loses nothing
                if not self.timed_out:
                    for relay in self.relays:
                        relay.drain()  # every byte still in the pipes reaches log and clients
                if self.attach is None or self.timed_out or not self.attach.queued():
                    # Nothing to wait for: the exit is recorded before the tasks unwind
                    # (~0.5 ms of trio's work that the engine need not wait for)
                    if self.attach is not None:
                        self.attach.close()
                    self.record_exit(self._status())
                nursery.cancel_scope.cancel()
            if self.recorded is None:
                # Clients still have output to take: the relay is stopped first, so that
                # nothing new is queued while they take it (assert: attach is not None)
                for relay in self.relays:
                    relay.drain()
                if self.attach is not None:
                    await self.attach.flush(ATTACH_FLUSH_DEADLINE)
                    self.attach.close()
                self.record_exit(self._status())
            clients.cancel_scope.cancel()
        if self.stdin is not None:
            self.stdin.close()
        return self._status()

    def _status(self) -> int:
        if self.timed_out:
            return -1
        assert self.reaper.wait_status is not None
        return exit_status(self.reaper.wait_status)

    def finish(self, status: int) -> int:
        """After trio.run has returned (or failed): release what is left, and record the
        exit if run() did not get to it. Returns M's exit status."""
        for relay in self.relays:
            if not self.timed_out and self.recorded is None:
                relay.drain()  # normally a no-op: run() drained (this covers a failed run)
            relay.close()
        if self.recorded is None:
            status = self.record_exit(status)
        else:
            status = self.recorded
        self.oom.close()
        self.sinks.close()
        return status

    def record_exit(self, status: int) -> int:
        """Everything after the container's exit, in the contract's order (§8.3), once
        every byte has been relayed. The engine's fds are ours alone (held since the
        start, so no fd of trio's can have their numbers): closing them inside trio is
        safe. Returns the status for M's exit (1 if the exit file could not be written)."""
        self.oom.check()  # an OOM notification still pending: its files precede the exit file
        self.sinks.finish(sync=not self.config.opts.no_sync_log)
        for fd in self.l.inherited_fds:  # lets the engine rebind reserved ports at once
            try:
                os.close(fd)
            except OSError:
                pass
        opts = self.config.opts
        try:
            write_exit_files(opts.exit_dir, opts.persist_dir, self.config.cid, status)
        except OSError as e:
            log.error("Failed to write %d to exit file: %s", status, e)
            status = 1
        if self.config.is_exec:
            key = sync.message_key(self.config.api_version, True)
            sync.send(self.l.sync_fd, sync.encode(
                key, status, "command timed out" if self.timed_out else None))
        if self.l.attach is not None:  # removed after the exit file, as conmon does
            for path in (self.l.attach.path, self.l.attach.symlink):
                if path:
                    try:
                        os.unlink(path)
                    except OSError:
                        pass
        # Let the engine run first: the exit file (or the exec exit message) has just woken
        # it, and on a busy machine it can be queued behind us while trio unwinds and we
        # exit. Nothing of ours is urgent now. bench/startup.py (after a give-back pass):
        # the engine saw the exit file 2.4-2.8 ms after the container's exit with this
        # yield, 3.1-3.9 ms without.
        os.sched_yield()
        self.recorded = status
        return status


def make_sinks(config: Config, log_fd: int | None) -> list[LogSink]:
    """The log sinks the configuration asks for; the k8s file is `log_fd`, opened early."""
    sinks: list[LogSink] = []
    opts = config.opts
    path = config.logs.k8s_path
    if config.logs.passthrough:
        return sinks  # the runtime writes to the engine's stdio directly
    if path is not None and log_fd is not None:
        sinks.append(K8sFileLog(path, log_fd, opts.log_size_max, opts.log_global_size_max,
                                opts.log_rotate, opts.log_max_files, opts.log_allowlist_dirs))
    if config.logs.journald:
        from pymon.journald import JournaldLog

        sinks.append(JournaldLog(config.cid, opts.name, opts.log_tag, opts.log_labels,
                                 partial_flag=not opts.no_container_partial_message))
    return sinks


async def wait_for_eof(relays: list[Relay]) -> None:
    """After the container's exit: until every relay is at EOF, but no longer than
    DRAIN_DEADLINE, and not while the pipes have been quiet for DRAIN_IDLE."""
    for relay in relays:  # usually every writer is gone with the container: EOF, no wait
        relay.drain()
    if all(relay.eof.is_set() for relay in relays):
        return
    deadline = trio.current_time() + DRAIN_DEADLINE
    while trio.current_time() < deadline:
        with trio.move_on_after(min(DRAIN_IDLE, deadline - trio.current_time())):
            for relay in relays:
                await relay.eof.wait()
            return
        last = max((r.last_data for r in relays), default=0.0)
        if trio.current_time() - last >= DRAIN_IDLE:
            return  # held open, but quiet: do not keep the engine waiting


async def serve_fifo(fd: int, lines: LineSplitter, handle: Callable[[bytes], None]) -> None:
    """Serve a ctl/winsz fifo. We hold its write end too, so it never reports EOF."""
    while True:
        for line in read_pending(fd, lines):
            handle(line)
        await trio.lowlevel.wait_readable(fd)


def run(launched: Launched) -> int:
    """Run the monitor until the container has exited and its exit is recorded.

    An unexpected error in any task is logged with its traceback; the container's exit is
    still waited for and recorded, and M exits non-zero."""
    _native.keep_heap(trim_threshold=8 << 20, mmap_threshold=4 << 20)
    monitor = Monitor(launched)
    givingback.start()
    try:
        status = trio.run(monitor.run)
    except Exception:  # noqa: BLE001 -- any error: logged, and the exit is still recorded
        log.error("monitor failed: %s", traceback.format_exc())
        if monitor.reaper.wait_status is None:
            monitor.reaper.wait_status = _wait_blocking(launched.container_pid)
        monitor.finish(exit_status(monitor.reaper.wait_status))
        return 1
    return monitor.finish(status)


def _wait_blocking(pid: int) -> int:
    try:
        return os.waitpid(pid, 0)[1]
    except ChildProcessError:
        return 0
