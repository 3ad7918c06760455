"""P0's share of the work, from an `Invocation`: argv, the checks of contract §1.5, the
k8s log file, and the start pipe. Shared by the cold launcher and the forked monitor, so the
engine sees the same messages and the same order either way.

Runs before trio is imported; kept import-light (see monitor/setup.py).
"""

from __future__ import annotations

# _signal, not signal: the public module imports enum (~4 ms on the start-up path)
import _signal as signal
import os

from pymon import procattrs, signals, sync
from pymon.cli import Frozen, Options, parse_args, version_text
from pymon.config import Config, build_config, check_exec_spec, check_log_rules
from pymon.diag import log
from pymon.errors import CliError, PymonError, SetupError
from pymon.handover import Invocation
from pymon.logs import open_k8s_file


class Prepared(Frozen):
    """What the monitor set-up needs, once the start byte has arrived."""

    __slots__ = ("config", "engine_fds", "sync_fd", "start_fd", "attach_fd", "log_fd", "oom",
                 "env")
    config: Config
    engine_fds: tuple[int, ...]  # inherited fds held until teardown (§2.2)
    sync_fd: int | None
    start_fd: int | None  # exec attach only: read a second time by R; else closed
    attach_fd: int | None
    log_fd: int | None
    oom: bytes | None  # the launcher's oom_score_adj, handed back to R and X
    env: dict[str, str]  # the environment for R and X

    def __init__(self, **values: object) -> None:
        self._init(values)


def begin() -> None:
    """The process state both launch paths start from: conmon's umask, and until the
    runtime is forked SIGTERM ends us at once with 1 and no cleanup, while SIGINT keeps its
    default action (Python would otherwise raise KeyboardInterrupt)."""
    os.umask(0o022)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(1))
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signals.ignore_stray()  # a stray SIGHUP/SIGUSR1/... must not lose the container's exit


def write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


def env_fd(env: dict[str, str], name: str, required: bool = False) -> int | None:
    """An fd number from the environment, checked to be open; made CLOEXEC so that R and
    the container never see the engine's sync/start/attach sockets."""
    value = env.get(name)
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


def prepare(inv: Invocation) -> Prepared | str:
    """Parse and check the invocation, open the log, lower our oom_score_adj, then block on
    the start pipe. Returns the text to print and exit 0 with for --help/--version.
    Raises PymonError for the engine (P0's stderr and exit status), and sends its text on
    the sync pipe too once the argv has been parsed (sync.EarlyReport)."""
    parsed = parse_args(list(inv.args))
    if isinstance(parsed, str):
        return parsed
    if parsed.version:
        return version_text()
    report = sync.EarlyReport(inv.env, sync.message_key(1 if parsed.api_version else 0,
                                                         parsed.exec))
    try:
        return _prepare(inv, parsed)
    except PymonError as e:
        report.send(str(e))
        raise


def _prepare(inv: Invocation, parsed: Options) -> Prepared:
    config = build_config(parsed, inv.cwd)
    opts = config.opts
    log.configure(config.log_level, opts.syslog, config.cid, opts.log_tag)

    # Checks conmon leaves to M, where a failure reaches nobody: done here, so the engine
    # gets a message and nothing is left behind.
    sync_fd = env_fd(inv.env, "_OCI_SYNCPIPE")
    start_fd = env_fd(inv.env, "_OCI_STARTPIPE")
    attach_fd = env_fd(inv.env, "_OCI_ATTACHPIPE", required=True) if opts.exec_attach else None
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
    # The start fd is closed unless R reads it again, and its number may be reused; the
    # sync fd lives to the end: neither is in the set closed at teardown.
    engine_fds = tuple(fd for fd in inv.fds if fd not in (sync_fd, start_fd))
    return Prepared(config=config, engine_fds=engine_fds, sync_fd=sync_fd,
                    start_fd=start_fd if opts.exec_attach else None, attach_fd=attach_fd,
                    log_fd=log_fd, oom=oom, env=inv.env)


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
