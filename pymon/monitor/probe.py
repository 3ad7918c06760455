"""ExecSync without trio: the foreground exec monitors CRI-O starts for exec probes.

For every ExecSync (kubelet's exec probes: one every few seconds per container) CRI-O
starts a monitor with `-e --sync` and no tty, stdin, attach socket or bundle (so no
fifos), and waits for it to exit. Such a monitor only copies two pipes into the k8s log
until the exec'd process has exited (or -T expires), then reports. Importing trio for
that is most of its cost (~100 ms of CPU per probe, bench/execsync.py): here the same
work is done with poll() on the pipes and a pidfd.

The order is life.py's: output read to EOF (bounded like life.DRAIN_*), logs
fsynced, engine fds closed, exit files, then the exit message; on -T expiry the whole
tree is killed and reaped first (proctree).
"""

from __future__ import annotations

import errno
import os
import select
import time

from pymon import proctree, sync
from pymon.diag import log
from pymon.exitfile import exit_status, write_exit_files
from pymon.logformat import STDERR, STDOUT
from pymon.logs import K8sFileLog, LogSink, Sinks

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pymon.monitor.launched import Launched

READ_SIZE = 256 * 1024  # as stdio.READ_SIZE (that module imports trio)
DRAIN_DEADLINE = 2.0  # as life.DRAIN_DEADLINE / DRAIN_IDLE
DRAIN_IDLE = 0.2


def eligible(launched: Launched) -> bool:
    """CRI-O's ExecSync shape: a foreground exec with nothing to serve but its output."""
    config = launched.config
    return (config.is_exec and config.opts.sync and launched.attach is None
            and launched.stdin_fd is None and launched.tty_master is None
            and launched.ctl_fds is None and launched.winsz_fds is None
            and launched.notify_fd is None and launched.early_ctl is None
            and not config.logs.journald)


class _Pipes:
    """The exec's stdout/stderr pipes -> sinks, over one poll set."""

    def __init__(self, launched: Launched, sinks: Sinks) -> None:
        self.sinks = sinks
        self.streams: dict[int, bytes] = {}
        for fd, stream in ((launched.stdout_fd, STDOUT), (launched.stderr_fd, STDERR)):
            if fd is not None:
                os.set_blocking(fd, False)
                self.streams[fd] = stream
        self.open = set(self.streams)

    def read(self, fd: int) -> int:
        """Relay what can be read now; returns the bytes read (0: would block or EOF)."""
        try:
            chunk = os.read(fd, READ_SIZE)
        except BlockingIOError:
            return 0
        except OSError as e:
            if e.errno != errno.EIO:
                log.warning("read from container failed: %s", e.strerror)
            chunk = b""
        if not chunk:
            self.open.discard(fd)
            return 0
        self.sinks.write(chunk, self.streams[fd])
        return len(chunk)

    def drain(self) -> None:
        for fd in list(self.open):
            while fd in self.open and self.read(fd):
                pass

    def close(self) -> None:
        for fd in self.streams:
            os.close(fd)


def run(launched: Launched) -> int:
    """Relay until the exec'd process exits (or -T), then report. Returns its status."""
    config, opts = launched.config, launched.config.opts
    sinks_list: list[LogSink] = []
    if config.logs.k8s_path is not None and launched.log_fd is not None:
        sinks_list.append(K8sFileLog(config.logs.k8s_path, launched.log_fd, opts.log_size_max,
                                     opts.log_global_size_max, opts.log_rotate,
                                     opts.log_max_files, opts.log_allowlist_dirs))
    sinks = Sinks(sinks_list)
    pipes = _Pipes(launched, sinks)
    pid = launched.container_pid
    deadline = launched.pid_sent_at + opts.timeout if opts.timeout else None
    wait_status, timed_out = _relay_until_exit(pid, pipes, deadline)
    if timed_out:
        left = proctree.kill_and_reap_blocking(pid, _sweep)
        if left:
            log.warning("processes still not reaped after the timeout: %s", left)
    else:
        _read_to_eof(pipes)
        pipes.drain()
    _sweep()  # orphans the exec left to us (we are their subreaper)
    pipes.close()
    launched.oom.check()
    launched.oom.close()
    sinks.finish(sync=not opts.no_sync_log)
    sinks.close()
    for fd in launched.inherited_fds:
        try:
            os.close(fd)
        except OSError:
            pass
    status = -1 if timed_out else exit_status(wait_status)
    try:
        write_exit_files(opts.exit_dir, opts.persist_dir, config.cid, status)
    except OSError as e:
        log.error("Failed to write %d to exit file: %s", status, e)
        status = 1
    sync.send(launched.sync_fd, sync.encode(sync.message_key(config.api_version, True), status,
                                            "command timed out" if timed_out else None))
    return status


def _relay_until_exit(pid: int, pipes: _Pipes, deadline: float | None) -> tuple[int, bool]:
    """Returns (wait status, timed out)."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return _reap(pid), False
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    for fd in pipes.open:
        poller.register(fd, select.POLLIN)
    try:
        while True:
            wait_ms = -1.0
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return 0, True
                wait_ms = left * 1000 + 1  # poll rounds down: never wake just before it
            for fd, _ in poller.poll(wait_ms):
                if fd == pidfd:
                    return _reap(pid), False
                if not pipes.read(fd) and fd not in pipes.open:
                    poller.unregister(fd)
    finally:
        os.close(pidfd)


def _read_to_eof(pipes: _Pipes) -> None:
    """After the exit: until EOF, but not past DRAIN_IDLE of quiet or DRAIN_DEADLINE (a
    process the exec left behind may hold the pipes)."""
    poller = select.poll()
    for fd in pipes.open:
        poller.register(fd, select.POLLIN)
    end = time.monotonic() + DRAIN_DEADLINE
    while pipes.open:
        left = min(DRAIN_IDLE, end - time.monotonic())
        if left <= 0:
            return
        events = poller.poll(left * 1000)
        if not events:
            return  # quiet: do not keep the engine waiting
        for fd, _ in events:
            if not pipes.read(fd) and fd not in pipes.open:
                poller.unregister(fd)


def _reap(pid: int) -> int:
    try:
        return os.waitpid(pid, 0)[1]
    except ChildProcessError:
        return 0  # not ours (the runtime did not leave it to us): conmon assumes 0


def _sweep() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
