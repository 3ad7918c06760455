"""The launch path: argv -> start pipe -> fork -> runtime -> pid on the sync pipe.

Everything here runs before trio is imported (contract §2.3 steps 1-15): the engine waits
for the container pid, and `import trio` alone costs ~100 ms. The trio monitor starts only
after the pid has been sent, from `monitor.run`. A later pre-forked mode can reuse
`prepare` and `launch` and hand the result to the monitor the same way.

Processes: P0 (parses, reads the start pipe, forks, writes the conmon pidfile, exits 0),
M (the monitor: setsid, subreaper, spawns R and stays for the container's life),
R (the runtime), C (the container, re-parented to M when R exits), X (the exit command).
"""

from __future__ import annotations

import os
# _signal, not signal: the public module imports enum (~4 ms on the start-up path)
# for IntEnum wrappers we do not need; the functions and constants are the same.
import _signal as signal
import sys

from pymon import procattrs, runtime, sockets, sync
from pymon.cli import Frozen, parse_args, version_text
from pymon.config import (Config, build_config, check_exec_spec, check_log_rules,
                          explain_bad_exec_spec)
from pymon.ctl import Control, EarlyServer, read_pending
from pymon.diag import log
from pymon.errors import CliError, PymonError, SetupError
from pymon.exitfile import exit_status, run_exit_command, write_atomic
from pymon.logs import open_k8s_file

TYPE_CHECKING = False  # annotations only (PEP 563): these are not imported at run time
if TYPE_CHECKING:
    from collections.abc import Callable

    from pymon.oom import OomWatcher

STDIO_PIPE_SIZE = 1 << 20  # fewer, larger reads than the 64 KiB default (see bench/)
RUNTIME_STDERR_MAX = 8191  # what conmon reads of a failed runtime's stderr


class Launched(Frozen):
    """What the launch path hands to the monitor. All fds are M's and CLOEXEC."""

    __slots__ = ("config", "container_pid", "runtime_pid", "stdout_fd", "stderr_fd",
                 "stdin_fd", "log_fd", "sync_fd", "inherited_fds", "oom_score_adj",
                 "ctl_fds", "winsz_fds", "attach", "tty_master", "control", "notify_fd",
                 "oom", "pid_sent_at", "early_ctl")
    config: Config
    container_pid: int
    runtime_pid: int
    stdout_fd: int | None
    stderr_fd: int | None
    stdin_fd: int | None
    log_fd: int | None
    sync_fd: int | None
    inherited_fds: tuple[int, ...]
    oom_score_adj: bytes | None
    ctl_fds: tuple[int, int] | None
    winsz_fds: tuple[int, int] | None
    attach: sockets.AttachListener | None
    tty_master: int | None  # terminal mode: the pty master, also `stdin_fd`
    control: Control  # what ctl/winsz lines do, and their pending partial lines
    notify_fd: int | None  # the container side of the sd-notify proxy
    oom: OomWatcher
    pid_sent_at: float  # time.monotonic() when the pid message went out
    early_ctl: EarlyServer | None  # serves ctl until the monitor's tasks take over

    def __init__(self, **values: object) -> None:
        self._init(values)


def inherited_fds() -> tuple[int, ...]:
    """The fds >= 3 open at start-up: the engine's (preserved fds, port reservations, the
    _OCI_* pipes). Taken before this process opens anything of its own."""
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return ()
    fds = []
    for name in names:
        fd = int(name)
        if fd < 3:
            continue
        try:
            os.get_inheritable(fd)  # the fd listdir itself used is closed by now
        except OSError:
            continue
        fds.append(fd)
    return tuple(sorted(fds))


def env_fd(name: str, required: bool = False) -> int | None:
    """An fd number from the environment, checked to be open; made CLOEXEC so that R and
    the container never see the engine's sync/start/attach sockets."""
    value = os.environ.get(name)
    if value is None:
        if required:
            raise CliError(f"--attach specified but {name} was not")
        return None
    try:
        fd = int(value, 10)
    except ValueError:
        raise CliError(f"unable to parse {name}") from None
    if fd < 0:
        raise CliError(f"unable to parse {name}")
    try:
        os.set_inheritable(fd, False)
    except OSError as e:
        raise SetupError(f"unable to make {name} CLOEXEC", e) from None
    return fd


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
EARLY_REPORT = sync.EarlyReport()
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)


def main(argv: list[str] | None = None) -> int:
    fds = inherited_fds()
    os.umask(0o022)
    # Until the runtime is forked, SIGTERM ends us at once with 1 and no cleanup; SIGINT
    # keeps its default action (Python would otherwise raise KeyboardInterrupt).
    signal.signal(signal.SIGTERM, lambda *_: os._exit(1))
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        return _main(sys.argv[1:] if argv is None else argv, fds)
    except PymonError as e:
        try:
            os.write(2, e.render().encode(errors="replace"))
        except OSError:
            pass
        EARLY_REPORT.send(str(e))
        return e.status


def _main(argv: list[str], fds: tuple[int, ...]) -> int:
    parsed = parse_args(argv)
    if isinstance(parsed, str):
        sys.stdout.write(parsed)
        return 0
    if parsed.version:
        sys.stdout.write(version_text())
        return 0
    EARLY_REPORT.arm(1 if parsed.api_version else 0, parsed.exec)
    config = build_config(parsed)
    opts = config.opts
    log.configure(config.log_level, opts.syslog, config.cid, opts.log_tag)

    # Checks conmon leaves to M, where a failure reaches nobody: done here, so the engine
    # gets a message and nothing is left behind.
    sync_fd = env_fd("_OCI_SYNCPIPE")
    start_fd = env_fd("_OCI_STARTPIPE")
    attach_fd = env_fd("_OCI_ATTACHPIPE", required=True) if opts.exec_attach else None
    if config.bundle is not None and not os.path.isdir(config.bundle):
        raise CliError(f"Bundle path {config.bundle} is not a directory")
    if opts.exec:
        check_exec_spec(opts.exec_process_spec or "")
    for what, d in (("exit", opts.exit_dir), ("persist", opts.persist_dir)):
        if d and not (os.path.isdir(d) and os.access(d, os.W_OK | os.X_OK)):
            raise CliError(f"The {what} directory {d} is not a writable directory")

    log_fd = None
    created_log = False
    if config.logs.k8s_path is not None:
        created_log = not os.path.lexists(config.logs.k8s_path)
        try:
            log_fd = open_k8s_file(config.logs.k8s_path)
        except OSError as e:
            raise SetupError("Failed to open log file", e) from None
    try:
        check_log_rules(config)
    except CliError:
        if created_log and config.logs.k8s_path:
            os.unlink(config.logs.k8s_path)
        raise
    if opts.no_container_partial_message and not config.logs.journald:
        log.warning("--no-container-partial-message has no effect without journald log driver")

    oom = procattrs.lower_oom_score_adj()
    read_start_pipe(start_fd, keep=opts.exec_attach)
    if not opts.sync:
        daemonize(opts.conmon_pidfile)
    EARLY_REPORT.disarm()  # from here on M reports its own failures
    return monitor_process(config, fds, sync_fd, start_fd, attach_fd, log_fd, oom)


def read_start_pipe(fd: int | None, keep: bool) -> None:
    """Block until the engine has placed us in our cgroup (it then writes one byte).
    EOF is fine. Nothing may be forked before this returns (contract §2.7)."""
    if fd is None or fd <= 0:
        return
    try:
        os.read(fd, 8192)
    except OSError as e:
        raise SetupError("start-pipe read failed", e) from None
    if not keep:
        os.close(fd)


def daemonize(conmon_pidfile: str | None) -> None:
    """Fork once; the parent (P0) writes the child's pid and exits 0 at once so the
    engine's wait returns (conmon's tests rely on that even when the monitor later fails:
    such failures go to the sync pipe, if there is one). The child continues as M."""
    pid = os.fork()
    if pid == 0:
        return
    if conmon_pidfile:
        try:
            write_atomic(conmon_pidfile, str(pid))
        except OSError as e:
            os.kill(pid, signal.SIGKILL)  # leave nothing behind
            os.waitpid(pid, 0)
            os.write(2, f"[conmon:e]: Failed to write conmon pidfile: {e.strerror}\n".encode())
            os._exit(1)
    os._exit(0)


def monitor_process(config: Config, fds: tuple[int, ...], sync_fd: int | None,
                    start_fd: int | None, attach_fd: int | None, log_fd: int | None,
                    oom: bytes | None) -> int:
    """M: everything from setsid to the exit command. Returns M's exit status.

    A set-up failure here is also sent on the sync pipe (conmon sends nothing, and podman
    then reports only "unexpected end of JSON input")."""
    try:
        return _monitor_process(config, fds, sync_fd, start_fd, attach_fd, log_fd, oom)
    except PymonError as e:
        key = sync.message_key(config.api_version, config.opts.exec)
        try:
            sync.send(sync_fd, sync.encode(key, -1, str(e)))
        except OSError:
            pass
        raise


def _monitor_process(config: Config, fds: tuple[int, ...], sync_fd: int | None,
                     start_fd: int | None, attach_fd: int | None, log_fd: int | None,
                     oom: bytes | None) -> int:
    from pymon import _native

    opts = config.opts
    passthrough = config.logs.passthrough
    # The engine's fds we hold until teardown (§2.2). The start fd is closed before then and
    # its number may be reused, and the sync fd lives to the end: neither is in the set.
    engine_fds = tuple(fd for fd in fds if fd not in (sync_fd, start_fd))
    if not opts.exec_attach:
        start_fd = None  # already read and closed by P0
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
    console = attach = None
    if opts.terminal and not passthrough:
        try:
            console = sockets.ConsoleSocket.create()
        except OSError as e:
            raise SetupError("Failed to create console socket", e) from None
    ctl = winsz = None
    if config.bundle is not None and not passthrough:
        try:
            attach = sockets.create_attach_listener(config.bundle, opts.full_attach,
                                                    opts.socket_dir_path, opts.cuuid)
        except OSError as e:
            raise SetupError("Failed to create container attach socket", e) from None
        ctl = make_fifo(os.path.join(config.bundle, "ctl"))
        winsz = make_fifo(os.path.join(config.bundle, "winsz"))
    if attach_fd is not None:
        # exec attach (§10): the attach socket is listening; the engine may connect now
        sync.send(attach_fd, sync.encode("data", 0))

    argv = runtime.runtime_argv(config, console.path if console else None)
    log.debug("calling runtime args: %s", " ".join(argv))
    wiring = runtime.Wiring(
        stdin=None if passthrough else (stdin_r if stdin_r is not None else devnull),
        stdout=None if passthrough else (stdout_w if stdout_w is not None else devnull),
        stderr=None if passthrough else stderr_w,
        oom_score_adj=oom, start_fd=start_fd)

    signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
    rpid = runtime.spawn(argv, wiring, opts.replace_listen_pid)
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
        finish_without_container(config, oom)
        return 1
    if master is not None:
        stdout_r = os.dup(master)  # output is read from a dup, input written to the master
        os.set_inheritable(stdout_r, False)
        stdin_w = master
    FORWARDER.container_pid = result
    # Armed before the engine has the pid, so before it can start the container: set up
    # from the trio monitor it missed OOM kills during trio's import (conmon arms it just
    # after the pid message; ~0.3 ms here).
    from pymon.oom import OomWatcher

    oom_watch = OomWatcher.for_pid(result, config.bundle, opts.persist_dir, fresh=not opts.exec)
    early_ctl = early[0] if early else None
    if not config.legacy_exec:
        sync_fd = sync.send(sync_fd, sync.encode(sync.message_key(config.api_version, opts.exec),
                                                 result))
    import time

    pid_sent_at = time.monotonic()  # -T counts from here, not from trio's start

    launched = Launched(
        config=config, container_pid=result, runtime_pid=rpid, stdout_fd=stdout_r,
        stderr_fd=stderr_r, stdin_fd=stdin_w, log_fd=log_fd, sync_fd=sync_fd,
        inherited_fds=engine_fds, oom_score_adj=oom,
        ctl_fds=ctl, winsz_fds=winsz, attach=attach, tty_master=master, control=control,
        notify_fd=notify_fd, oom=oom_watch, pid_sent_at=pid_sent_at, early_ctl=early_ctl)
    from pymon import probe

    if probe.eligible(launched):  # CRI-O's ExecSync: no trio needed (pymon/probe.py)
        code = probe.run(launched)
    else:
        from pymon import monitor  # imports trio: only now that the engine has the pid

        code = monitor.run(launched)
    if opts.exit_command:
        run_exit_command(opts.exit_command, opts.exit_command_args, opts.exit_delay, oom)
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


def make_fifo(path: str) -> tuple[int, int]:
    """mkfifo (replacing a stale one), then hold it open for reading and writing for our
    whole life, so an engine's O_WRONLY|O_NONBLOCK open always finds a reader."""
    try:
        os.mkfifo(path, 0o660)
    except FileExistsError:
        os.unlink(path)
        os.mkfifo(path, 0o660)
    except OSError as e:
        raise SetupError(f"Failed to mkfifo at {path}", e) from None
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


def runtime_wait_console(rpid: int, console: sockets.ConsoleSocket,
                         on_master: Callable[[int], None]) -> tuple[int, int | None]:
    """Wait for R while accepting its console connection (terminal mode, §11): the runtime
    sends the pty master before it exits, so both are watched at once. Returns R's wait
    status and the master fd, or None if none arrived."""
    import select

    pidfd = os.pidfd_open(rpid)
    master = None
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        poller.register(console.fileno(), select.POLLIN)
        exited = False
        while not exited:
            for fd, _ in poller.poll():
                if fd == pidfd:
                    exited = True
                elif master is None:
                    poller.unregister(console.fileno())
                    try:
                        master = console.receive_master()
                    except OSError as e:
                        log.error("Failed to receive console file descriptor: %s", e)
                    else:
                        on_master(master)
        if master is None and select.select([console.fileno()], [], [], 0)[0]:
            master = console.receive_master()  # connected just before exiting
            on_master(master)
    finally:
        os.close(pidfd)
        console.remove()
    return runtime_wait(rpid), master


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def runtime_wait(rpid: int) -> int:
    while True:
        try:
            _, status = os.waitpid(rpid, 0)
            return status
        except InterruptedError:
            continue


class RuntimeFailure(Exception):
    def __init__(self, message: bytes | str | None, log_text: str) -> None:
        super().__init__(log_text)
        self.message = message
        self.log_text = log_text


def judge_runtime(config: Config, status: int, stderr_fd: int | None) -> int:
    """The container pid, or RuntimeFailure with the text for the engine (contract §3.3)."""
    if not config.opts.exec and not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0):
        text = read_runtime_stderr(stderr_fd, wait=True)
        raise RuntimeFailure(text, f"Failed to create container: exit status {exit_status(status)}")
    try:
        return runtime.read_pidfile(config.container_pidfile)
    except OSError as e:
        message: bytes | str = read_runtime_stderr(stderr_fd, wait=False)
        if config.opts.exec:  # runc's JSON errors do not name the file ("unexpected EOF")
            message = explain_bad_exec_spec(config.opts.exec_process_spec or "", message)
        raise RuntimeFailure(message or e.strerror, f"Failed to read pidfile: {e.strerror}") from None


def read_runtime_stderr(fd: int | None, wait: bool) -> bytes:
    """Up to 8191 bytes of what the runtime wrote to stderr. With `wait`, wait for EOF but
    no longer than a second: a leftover process holding the pipe must not hang us."""
    if fd is None:
        return b""
    import select

    out = b""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    timeout = 1000 if wait else 0
    while len(out) < RUNTIME_STDERR_MAX:
        if not poller.poll(timeout):
            break
        chunk = os.read(fd, RUNTIME_STDERR_MAX - len(out))
        if not chunk:
            break
        out += chunk
        timeout = 100 if wait else 0
    return out


def finish_without_container(config: Config, oom: bytes | None) -> None:
    """After a failed create no exit file is written, but the exit command runs (conmon
    registers it with atexit as soon as R is forked)."""
    opts = config.opts
    if opts.exit_command:
        run_exit_command(opts.exit_command, opts.exit_command_args, opts.exit_delay, oom)
