"""M's set-up, from the start byte to the pid message (contract §2.3 steps 9-15), then the
container's life (monitor/life.py; monitor/probe.py for CRI-O's ExecSync) and the exit
command.

Everything here runs before trio is imported: the engine waits for the container pid, and
`import trio` alone costs ~100 ms in a cold monitor (a monitor forked from pymon-server has
it already). Imports are kept to what a bare interpreter has loaded: `_signal` instead of
`signal`, no `typing`, no `collections.abc` at run time.

Processes: M (the monitor: setsid, subreaper, spawns R and stays for the container's life),
R (the runtime), C (the container, re-parented to M when R exits), X (the exit command).
"""

from __future__ import annotations

# _signal, not signal: the public module imports enum (~4 ms on the start-up path)
# for IntEnum wrappers we do not need; the functions and constants are the same.
import _signal as signal
import os

from pymon import runtime, sockets, sync
from pymon.config import Config
from pymon.ctl import Control, EarlyServer, read_pending
from pymon.diag import log
from pymon.errors import PymonError, SetupError
from pymon.exitfile import run_exit_command
from pymon.monitor.launched import Launched
from pymon.monitor.prepare import Prepared
from pymon.monitor.verdict import RuntimeFailure, judge_runtime, runtime_wait, runtime_wait_console

TYPE_CHECKING = False  # annotations only (PEP 563): these are not imported at run time
if TYPE_CHECKING:
    from collections.abc import Callable

    from pymon.monitor.lifeline import Lifeline

STDIO_PIPE_SIZE = 1 << 20  # fewer, larger reads than the 64 KiB default (see bench/)


class _Forwarder:
    """SIGTERM/SIGINT/SIGQUIT while the runtime runs: forward to the container if its pid is
    known, else to the runtime (contract §8.7). The monitor takes over once trio runs."""

    runtime_pid = 0
    container_pid = 0

    def __call__(self, sig: int, frame: object) -> None:
        for pid in (self.container_pid, self.runtime_pid):
            if pid > 0:
                try:
                    os.kill(pid, sig)
                    return
                except ProcessLookupError:
                    continue


FORWARDER = _Forwarder()
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)


class Undo:
    """Cleanup for a set-up that fails half-way, declared next to each resource it undoes
    (trio's _subprocess.py does this with ExitStacks; contextlib's import costs ~3 ms on
    the cold start-up path, so this is the ten lines of it we need). Callbacks run in
    reverse order on failure and are dropped once the set-up has succeeded."""

    __slots__ = ("callbacks",)

    def __init__(self) -> None:
        self.callbacks: list[Callable[[], object]] = []

    def push(self, callback: Callable[[], object]) -> None:
        self.callbacks.append(callback)

    def run(self) -> None:
        while self.callbacks:
            try:
                self.callbacks.pop()()
            except OSError:
                pass


def monitor_process(prep: Prepared, keep: frozenset[int] = frozenset(),
                    lifeline: Lifeline | None = None) -> int:
    """M: everything from setsid to the exit command. Returns M's exit status. `keep` are
    fds M holds until it exits (a warm launcher's connection, for --sync). A warm monitor
    has a `lifeline` to its server, which rescues the container if M is killed.

    A set-up failure here is also sent on the sync pipe (conmon sends nothing, and podman
    then reports only "unexpected end of JSON input")."""
    undo = Undo()
    try:
        return _monitor_process(prep, keep, undo, lifeline)
    except PymonError as e:
        undo.run()
        key = sync.message_key(prep.config.api_version, prep.config.opts.exec)
        try:
            sync.send(prep.sync_fd, sync.encode(key, -1, str(e)))
        except OSError:
            pass
        raise


def _monitor_process(prep: Prepared, keep: frozenset[int], undo: Undo,
                     lifeline: Lifeline | None) -> int:
    from pymon import _native

    config, oom, sync_fd, start_fd = prep.config, prep.oom, prep.sync_fd, prep.start_fd
    opts = config.opts
    passthrough = config.logs.passthrough
    try:
        os.setsid()
    except OSError:
        pass  # --sync under a parent that used Setpgid: EPERM, harmless
    try:
        _native.set_child_subreaper(True)
    except OSError as e:
        raise SetupError("Failed to set as subreaper", e) from None
    if not passthrough:
        # Mandatory: with `podman run -t` our stderr is a pipe podman drains to EOF.
        null_stdio()

    # Stdio plumbing (contract §3.2). M's ends are CLOEXEC; R's ends are dup'ed onto 0-2.
    # An fd needs no undo: M exits when its set-up fails. Files in the bundle do.
    stdin_r = stdin_w = stdout_r = stdout_w = stderr_r = stderr_w = None
    if not passthrough:
        if opts.stdin and not opts.terminal:
            stdin_r, stdin_w = os.pipe2(os.O_CLOEXEC)
        if not opts.terminal:
            stdout_r, stdout_w = make_pipe()
        stderr_r, stderr_w = make_pipe()
    devnull = None
    if not passthrough and (stdin_r is None or stdout_w is None):
        devnull = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
    notify_fd = None
    if opts.sdnotify_socket and config.bundle is not None:
        try:
            notify_fd = sockets.create_notify_socket(config.bundle)
        except OSError as e:
            raise SetupError("Failed to create notify socket", e) from None
        undo.push(lambda: os.unlink(os.path.join(config.bundle or "", "notify", "notify.sock")))
    console = attach = None
    if opts.terminal and not passthrough:
        try:
            console = sockets.ConsoleSocket.create()
        except OSError as e:
            raise SetupError("Failed to create console socket", e) from None
        undo.push(console.remove)
    ctl = winsz = None
    if config.bundle is not None and not passthrough:
        try:
            attach = sockets.create_attach_listener(config.bundle, opts.full_attach,
                                                    opts.socket_dir_path, opts.cuuid)
        except OSError as e:
            raise SetupError("Failed to create container attach socket", e) from None
        undo.push(lambda: remove_attach_socket(attach))
        ctl = make_fifo(os.path.join(config.bundle, "ctl"), undo)
        winsz = make_fifo(os.path.join(config.bundle, "winsz"), undo)
    if prep.attach_fd is not None:
        # exec attach (§10): the attach socket is listening; the engine may connect now
        sync.send(prep.attach_fd, sync.encode("data", 0))

    argv = runtime.runtime_argv(config, console.path if console else None)
    log.debug("calling runtime args: %s", " ".join(argv))
    wiring = runtime.Wiring(
        stdin=None if passthrough else (stdin_r if stdin_r is not None else devnull),
        stdout=None if passthrough else (stdout_w if stdout_w is not None else devnull),
        stderr=None if passthrough else stderr_w,
        oom_score_adj=oom, start_fd=start_fd)

    signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
    rpid = runtime.spawn(argv, wiring, opts.replace_listen_pid, prep.env)
    undo.callbacks.clear()  # from here on a failure is the runtime's: reported below
    FORWARDER.runtime_pid = rpid
    for sig in FORWARDED:
        signal.signal(sig, FORWARDER)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)

    for fd in (stdin_r, stdout_w, stderr_w, devnull, start_fd):
        if fd is not None:
            os.close(fd)
    if passthrough:
        null_stdio()

    control = Control(None, lambda: None)  # the monitor supplies the log reopen
    early: list[EarlyServer] = []  # terminal mode: serves ctl from the pty's arrival on
    master = None
    if console is not None:
        status, master = runtime_wait_console(
            rpid, console, lambda fd: early.append(take_console(fd, control, ctl, winsz)))
    else:
        status = runtime_wait(rpid)
    try:
        result = judge_runtime(config, status, stderr_r)
        if console is not None and master is None:
            raise RuntimeFailure("Runtime did not set up terminal", "Runtime did not set up terminal")
    except RuntimeFailure as failure:
        log.error("%s", failure.log_text)
        sync.send(sync_fd, sync.encode(sync.message_key(config.api_version, opts.exec), -1,
                                       failure.message))
        if attach is not None and attach.symlink:
            _unlink(attach.symlink)
        for server in early:
            server.stop()
        finish_without_container(config, oom, keep)
        return 1
    if master is not None:
        stdout_r = os.dup(master)  # output is read from a dup, input written to the master
        os.set_inheritable(stdout_r, False)
        stdin_w = master
    FORWARDER.container_pid = result
    early_ctl = early[0] if early else None
    if not config.legacy_exec:
        sync_fd = sync.send(sync_fd, sync.encode(sync.message_key(config.api_version, opts.exec),
                                                 result))
        # The engine was waiting for that: let it run now. A socket write wakes its reader
        # on the writer's CPU (a sync wake-up, on the bet that the writer sleeps next),
        # but we go on with milliseconds of set-up (trio's import, cold), and the engine
        # waited behind them while the other CPU idled: the pid reached the start-up
        # bench 2.5 ms late in a quarter of launches, never after a yield.
        os.sched_yield()
    # Armed right after the pid message, as conmon does, not before it (~0.3 ms that the
    # engine waited for): the container's cgroup is new (create, restore), so a kill it
    # counted before the watch was armed is found and counted ours (OomWatcher's `fresh`,
    # test_oom_kill_before_the_monitor_watches); an exec'd process runs before either.
    # Set up from the trio monitor instead, it missed kills during trio's import.
    from pymon.oom import OomWatcher

    oom_watch = OomWatcher.for_pid(result, config.bundle, opts.persist_dir, fresh=not opts.exec)
    import time

    pid_sent_at = time.monotonic()  # -T counts from here, not from trio's start
    if early_ctl is not None and not opts.exec and opts.restore is None:
        early_ctl.wait_first_resize(result)  # the engine starts C now: stay off the CPU

    launched = Launched(
        config=config, container_pid=result, runtime_pid=rpid, stdout_fd=stdout_r,
        stderr_fd=stderr_r, stdin_fd=stdin_w, log_fd=prep.log_fd, sync_fd=sync_fd,
        inherited_fds=prep.engine_fds, oom_score_adj=oom,
        ctl_fds=ctl, winsz_fds=winsz, attach=attach, tty_master=master, control=control,
        notify_fd=notify_fd, oom=oom_watch, pid_sent_at=pid_sent_at, early_ctl=early_ctl,
        lifeline=lifeline if not config.is_exec else None)
    if launched.lifeline is not None:  # exec sessions are not rescued
        from pymon.server import rescuewire as rw

        # Not stdin's write end: a dup held elsewhere would keep the container from ever
        # seeing the EOF the monitor gives it by closing its end
        launched.lifeline.register(result, [
            *([(rw.TTY, master)] if master is not None else [
                (rw.STDOUT, stdout_r), (rw.STDERR, stderr_r)]),
            (rw.ATTACH, attach.fd if attach is not None else None)])
    from pymon.monitor import probe

    if probe.eligible(launched):  # CRI-O's ExecSync: no trio needed (monitor/probe.py)
        code = probe.run(launched)
    else:
        # imports trio (cold): only now that the engine has the pid
        from pymon.monitor import life

        code = life.run(launched)
    if opts.exit_command:
        run_exit_command(opts.exit_command, opts.exit_command_args, opts.exit_delay, oom,
                         keep | (lifeline.keep() if lifeline is not None else frozenset()),
                         forked=lifeline.done if lifeline is not None else None)
    if lifeline is not None:
        lifeline.done()  # no exit command (or it could not be forked): done all the same
    return code & 0xFF


def null_stdio() -> None:
    fd = os.open("/dev/null", os.O_RDWR)
    for target in (0, 1, 2):
        if fd != target:
            os.dup2(fd, target)
    if fd > 2:
        os.close(fd)


def make_pipe() -> tuple[int, int]:
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        import fcntl

        fcntl.fcntl(r, fcntl.F_SETPIPE_SZ, STDIO_PIPE_SIZE)
    except OSError:
        pass  # above /proc/sys/fs/pipe-max-size when unprivileged: keep the default
    return r, w


def make_fifo(path: str, undo: Undo) -> tuple[int, int]:
    """mkfifo (replacing a stale one), then hold it open for reading and writing for our
    whole life, so an engine's O_WRONLY|O_NONBLOCK open always finds a reader."""
    try:
        os.mkfifo(path, 0o660)
    except FileExistsError:
        os.unlink(path)
        os.mkfifo(path, 0o660)
    except OSError as e:
        raise SetupError(f"Failed to mkfifo at {path}", e) from None
    undo.push(lambda: os.unlink(path))
    r = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    w = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    return r, w


def take_console(master: int, control: Control, ctl: tuple[int, int] | None,
                 winsz: tuple[int, int] | None) -> EarlyServer:
    """The pty master has just arrived: ONLCR, then the sizes written to ctl/winsz before
    it came. An exec'd process starts right after the runtime sends the master, so this
    runs at once, while the runtime is still finishing (conmon's winsz watch does the
    same), not after it exits."""
    from pymon import terminal

    terminal.set_onlcr(master)
    control.resize = lambda h, w: terminal.resize(master, h, w)
    for fds, lines, handle in ((ctl, control.ctl_lines, control.on_ctl),
                               (winsz, control.winsz_lines, control.on_winsz)):
        if fds is not None:
            for line in read_pending(fds[0], lines):
                handle(line)
    # From now until the monitor's tasks run, a forked helper serves ctl/winsz: the engine
    # resizes the pty right after it gets the pid and starts the container at once, while
    # trio is still being imported. Forked now, so it is long ready by then.
    return EarlyServer(control, ctl, winsz, master)


def finish_without_container(config: Config, oom: bytes | None,
                             keep: frozenset[int] = frozenset()) -> None:
    """After a failed create no exit file is written, but the exit command runs (conmon
    registers it with atexit as soon as R is forked)."""
    opts = config.opts
    if opts.exit_command:
        run_exit_command(opts.exit_command, opts.exit_command_args, opts.exit_delay, oom, keep)


def remove_attach_socket(attach: sockets.AttachListener | None) -> None:
    if attach is not None:
        for path in (attach.path, attach.symlink):
            if path:
                _unlink(path)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


