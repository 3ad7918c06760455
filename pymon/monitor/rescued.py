"""The replacement monitor: forked by pymon-server when a warm monitor died before recording
its container's exit (pymon/server/rescue.py). It finishes the dead monitor's work with what
the server kept: the container's output pipes (dups), the launcher's request (argv,
environment, cwd, limits) and the container's wait status, which the server reaps (the
container was re-parented to it) and writes to `status_fd`.

    mirror the launcher again (environment, cwd, limits, signals; stray signals ignored, as
    the monitor's are: pymon/signals.py), rebuild the config from
    argv, join the dead monitor's cgroups, write our pid to the conmon pidfile, watch the
    container's memory cgroup, cut a record the monitor was killed in the middle of,
    reopen the log (append; its size counts toward the cap)
    trio: relay the pipes into the log and watch for OOM kills until the container has
    exited (SIGUSR1: the monitor's state report, status.py), then drain
    oom files, fsync, exit files (persist-dir, then exit-dir), attach socket removed, exit
    command

Lost with the monitor: its attach clients (new ones are served on its listener, which the
server kept; their input reaches a pty, not a stdin pipe), the container's stdin (its pipe's only writer was the monitor: the container sees
EOF), -T, ctl/winsz writes until the fifos have a reader again (the engine gets ENXIO),
and the one chunk of output the monitor had read and not yet written.
"""

from __future__ import annotations

import os
import stat
import traceback
from collections.abc import Awaitable, Callable

import trio

from pymon import procattrs, signals, terminal
from pymon.attach import AttachServer, Stdin
from pymon.cli import parse_args
from pymon.config import Config, build_config
from pymon.ctl import Control, LineSplitter
from pymon.diag import log
from pymon.exitfile import exit_status, run_exit_command, write_atomic, write_exit_files
from pymon.logformat import STDERR, STDOUT
from pymon.logs import Sinks, cut_torn_record, open_k8s_file
from pymon.monitor.life import (
    ATTACH_FLUSH_DEADLINE,
    make_sinks,
    serve_fifo,
    wait_for_eof,
)
from pymon.monitor.lifeline import Lifeline
from pymon.oom import OomWatcher
from pymon.server import cgroups, rescuewire, twin
from pymon.server.rescuewire import STATUS_SIZE, Job, describe
from pymon.server.wire import MASK64
from pymon.sockets import attach_symlink_base
from pymon.status import State, gather, report_on_sigusr1
from pymon.stdio import Relay, pump


def run(job: Job, mounts: list[cgroups.Mount]) -> int:
    """The replacement's whole life; returns its exit status."""
    req = job.req
    twin._signal_state(req.sig_blocked & MASK64, req.sig_ignored & MASK64)
    # as the monitor's (prepare.begin): a stray signal must not lose the exit again
    signals.ignore_stray()
    keep = {fd for _, fd in job.fds} | {fd for fd in (job.status_fd, job.channel)
                                         if fd is not None}
    procattrs.close_fds_except(keep)  # the server's: listener, channels, other containers'
    _null_stdio(0, 1)  # stderr stays the server's until the exit command: diagnostics
    log.__init__()  # type: ignore[misc]  # the server's rate-limit state is not ours
    problem = twin._process_state(req)
    os.umask(0o022)  # as the monitor's (prepare.begin): exit files get the same modes
    os.setsid()
    parsed = parse_args([os.fsdecode(a) for a in req.argv[1:]])
    if isinstance(parsed, str):  # --help: the monitor could not have registered
        return 1
    config = build_config(parsed, os.fsdecode(req.cwd))
    opts = config.opts
    log.configure(config.log_level, opts.syslog, config.cid, opts.log_tag)
    log.warning("monitor %d %s before recording the exit of container pid %d; replacement "
                "monitor %d continues its log and records its exit", job.monitor_pid,
                describe(job.monitor_status), job.container_pid, os.getpid())
    if problem is not None:
        log.warning("replacement monitor: %s", problem)
    if job.cgroups is not None:
        try:
            cgroups.join_listed(job.cgroups, mounts)
        except OSError as e:  # its cgroup may be gone with it: stay in the server's
            log.warning("replacement monitor stays in the server's cgroups: %s",
                        e.strerror or e)
    oom = procattrs.lower_oom_score_adj()  # the launcher's value, handed back to X
    if opts.conmon_pidfile:
        try:  # the monitor of this container is now this process
            write_atomic(opts.conmon_pidfile, str(os.getpid()))
        except OSError as e:
            log.warning("failed to write conmon pidfile: %s", e.strerror)
    # The container's memory cgroup, watched as the monitor did. "fresh": every OOM kill
    # it counted is this container's, one the dead monitor saw (or missed) included. A
    # container already reaped is looked up by the bundle's cgroupsPath, not by its pid,
    # which may name another process by now.
    oom_watch = OomWatcher.for_pid(job.container_pid if job.status_fd is not None else -1,
                                   config.bundle, opts.persist_dir, fresh=True)
    sinks = Sinks(make_sinks(config, _reopen_log(config)))
    roles = dict(job.fds)
    master = roles.get(rescuewire.TTY)
    # New attach clients are served on the dead monitor's listener (its clients are gone
    # with it); with a pty their input reaches the container, through a dup of the master
    attach = None
    if rescuewire.ATTACH in roles:
        attach = AttachServer(roles[rescuewire.ATTACH],
                              Stdin(os.dup(master)) if master is not None else None,
                              close_stdin_on_eof=opts.stdin and not opts.leave_stdin_open)
    fanout = attach.broadcast if attach is not None else None
    outputs = ((roles.get(rescuewire.TTY, roles.get(rescuewire.STDOUT)), STDOUT),
               (roles.get(rescuewire.STDERR), STDERR))
    relays = [Relay(fd, stream, sinks, fanout) for fd, stream in outputs if fd is not None]
    # ctl (log reopen, as CRI-O asks after kubelet rotated the log; pty size) and winsz,
    # reopened by path: the engine's writes find a reader again
    control = Control(None if master is None else
                      (lambda rows, cols: terminal.resize(master, rows, cols)), sinks.reopen)
    fifos: list[Fifo] = [(fds, lines, handle) for fds, lines, handle in (
        (_open_fifo(config, "ctl"), control.ctl_lines, control.on_ctl),
        (_open_fifo(config, "winsz"), control.winsz_lines, control.on_winsz)) if fds is not None]
    # Our own line to the server: killed in turn, we are replaced in turn
    lifeline = Lifeline(job.channel) if job.channel is not None else None
    life = _Life(job, relays, attach, oom_watch, lifeline, fifos, sinks)
    try:
        code = trio.run(life.run)
    except Exception:  # noqa: BLE001 - as life.run: the exit is recorded all the same
        log.error("replacement monitor failed: %s", traceback.format_exc())
        code = life.code if life.code is not None else _status_blocking(job)
    for relay in relays:
        relay.drain()  # normally a no-op: run() drained (this covers a failed run)
        relay.close()
    for (r, w), _, _ in fifos:
        os.close(r)
        os.close(w)
    oom_watch.check()  # the oom files precede the exit files
    oom_watch.close()
    sinks.finish(sync=not opts.no_sync_log)
    sinks.close()
    try:
        write_exit_files(opts.exit_dir, opts.persist_dir, config.cid, code)
    except OSError as e:
        log.error("Failed to write %d to exit file: %s", code, e)
    log.warning("replacement monitor %d recorded exit code %d of container pid %d",
                os.getpid(), code, job.container_pid)
    _remove_attach_socket(config)
    _null_stdio(2)
    if opts.exit_command:
        run_exit_command(opts.exit_command, opts.exit_command_args, opts.exit_delay, oom,
                         lifeline.keep() if lifeline is not None else frozenset(),
                         forked=lifeline.done if lifeline is not None else None)
    if lifeline is not None:
        lifeline.done()
    return 0


Fifo = tuple[tuple[int, int], LineSplitter, Callable[[bytes], None]]


def _open_fifo(config: Config, name: str) -> tuple[int, int] | None:
    """The dead monitor's fifo in the bundle, held open for reading and writing as the
    monitor held it (so it never reports EOF); None if there is none."""
    if config.bundle is None or config.logs.passthrough:
        return None
    path = os.path.join(config.bundle, name)
    try:
        if not stat.S_ISFIFO(os.lstat(path).st_mode):
            return None
        r = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        w = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError:
        os.close(r)
        return None
    return r, w


def _reopen_log(config: Config) -> int | None:
    path = config.logs.k8s_path
    if path is None or config.logs.passthrough:
        return None
    torn = cut_torn_record(path)
    if torn:
        log.warning("removed %d bytes of a log record cut short by the monitor's death", torn)
    try:
        return open_k8s_file(path)
    except OSError as e:
        log.error("replacement monitor cannot open log file %s: %s", path, e.strerror)
        return None


class _Life:
    """The container's remaining life under trio, as life.Monitor.run has it: relays, OOM
    watch, fifos and attach clients until the container has exited and its output is
    drained and handed to the clients."""

    def __init__(self, job: Job, relays: list[Relay], attach: AttachServer | None,
                 oom_watch: OomWatcher, lifeline: Lifeline | None, fifos: list[Fifo],
                 sinks: Sinks) -> None:
        self.job, self.relays, self.attach = job, relays, attach
        self.oom_watch, self.lifeline, self.fifos = oom_watch, lifeline, fifos
        self.sinks = sinks
        self.code: int | None = job.code

    def _state(self) -> State:
        """The SIGUSR1 report, as the monitor's (status.py)."""
        return gather(self.job.container_pid, self.code is None, self.relays, self.attach,
                      self.sinks)

    def _backpressure(self) -> Awaitable[None] | None:
        if self.attach is not None and self.attach.lagging():
            return self.attach.wait_for_room()
        return None

    async def run(self) -> int:
        async with trio.open_nursery() as clients:
            if self.attach is not None:
                self.attach.accept_pending()
                clients.start_soon(self.attach.serve)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(report_on_sigusr1, self._state)
                nursery.start_soon(pump, self.relays, self._backpressure)
                nursery.start_soon(self.oom_watch.run)
                for (r, _), lines, handle in self.fifos:
                    nursery.start_soon(serve_fifo, r, lines, handle)
                if self.code is None:
                    self.code = await _container_exit(self.job)
                    if self.lifeline is not None:
                        self.lifeline.exited(self.code)
                code = self.code
                await wait_for_eof(self.relays)
                nursery.cancel_scope.cancel()
            for relay in self.relays:
                relay.drain()  # every byte still in the pipes reaches log and clients
            if self.attach is not None:
                await self.attach.flush(ATTACH_FLUSH_DEADLINE)
                self.attach.close()
            clients.cancel_scope.cancel()
        if self.attach is not None and self.attach.stdin is not None:
            self.attach.stdin.close()
        return code


async def _container_exit(job: Job) -> int:
    """The container's exit code: its wait status comes from the server, which reaps it."""
    assert job.status_fd is not None
    await trio.lowlevel.wait_readable(job.status_fd)
    data = os.read(job.status_fd, STATUS_SIZE)
    os.close(job.status_fd)
    if len(data) == STATUS_SIZE:
        return exit_status(int.from_bytes(data, "big", signed=True))
    # The server is gone (stopped, killed): the container is init's now, its status lost
    log.error("the server stopped before container pid %d exited: its exit code is lost",
              job.container_pid)
    try:
        pidfd = os.pidfd_open(job.container_pid)
    except ProcessLookupError:
        return -1
    try:
        await trio.lowlevel.wait_readable(pidfd)
    finally:
        os.close(pidfd)
    return -1


def _status_blocking(job: Job) -> int:
    """The container's exit code after a failure under trio: wait for it without trio."""
    if job.status_fd is None:
        return -1
    try:
        data = os.read(job.status_fd, STATUS_SIZE)
    except OSError:  # closed: _container_exit read it, and the failure came after
        return -1
    if len(data) != STATUS_SIZE:
        return -1
    return exit_status(int.from_bytes(data, "big", signed=True))


def _remove_attach_socket(config: Config) -> None:
    """The dead monitor's attach socket (and its symlink), as the monitor removes them."""
    if config.bundle is None or config.logs.passthrough:
        return
    opts = config.opts
    paths = [os.path.join(config.bundle, "attach")]
    if not opts.full_attach:
        paths.append(attach_symlink_base(opts.socket_dir_path, opts.cuuid or ""))
    for path in paths:
        try:
            os.unlink(path)
        except OSError:
            pass


def _null_stdio(*targets: int) -> None:
    fd = os.open("/dev/null", os.O_RDWR)
    for target in targets:
        if fd != target:
            os.dup2(fd, target)
    if fd not in targets:
        os.close(fd)
