"""The OCI runtime process R: its argv (pure, contract §3.1), its spawn, and its result.

Spawning does not use subprocess: R must get PDEATHSIG, the original oom_score_adj, a
clean signal mask, LISTEN_PID rewriting, pipe ends fchmod'ed to 0777, the engine's fds at
their numbers, and (exec attach) a blocking read of the start pipe before exec; subprocess
offers none of that without a preexec_fn, which costs a full fork plus its own imports on
the start-up path. R is started with vfork by pymon._native (pymon_spawn does those steps
in C); only an exec attach, whose R blocks on the start pipe before exec (a vfork would
block M with it), and an invalid LISTEN_PID (reported by R as before) use os.fork.
"""

from __future__ import annotations

# _signal, not signal: the public module imports enum (~4 ms on the start-up path)
# for IntEnum wrappers we do not need; the functions and constants are the same.
import _signal as signal
import errno
import os

from pymon import procattrs, signals
from pymon.config import Config


def runtime_argv(config: Config, console_socket: str | None = None) -> list[str]:
    """RT [--systemd-cgroup] [RUNTIME_ARG...] create|restore|exec ... [RUNTIME_OPT...]
    [--console-socket S] CID — the exact order conmon uses."""
    opts = config.opts
    argv = [opts.runtime or ""]
    if opts.exec:
        argv += opts.runtime_args
        argv += ["exec", "--pid-file", config.container_pidfile,
                 "--process", opts.exec_process_spec or "", "--detach"]
    else:
        if opts.systemd_cgroup:
            argv.append("--systemd-cgroup")
        argv += opts.runtime_args
        argv += ["restore" if opts.restore is not None else "create",
                 "--bundle", config.bundle or "", "--pid-file", config.container_pidfile]
        if opts.no_pivot:
            argv.append("--no-pivot")
        if opts.no_new_keyring:
            argv.append("--no-new-keyring")
        if opts.restore is not None:
            argv += ["--detach", "--image-path", opts.restore, "--work-path", config.bundle or ""]
    argv += opts.runtime_opts
    if console_socket is not None:
        argv += ["--console-socket", console_socket]
    argv.append(config.cid)
    return argv


def runtime_env(env: dict[str, str], replace_listen_pid: bool, parent_pid: int,
                own_pid: int) -> dict[str, str] | None:
    """LISTEN_PID rule of §3.2. Returns the env to use, or None when it is unchanged.
    Raises ValueError for a LISTEN_PID that is not a positive integer."""
    value = env.get("LISTEN_PID")
    if value is None:
        return None
    try:
        pid = int(value, 10)
    except ValueError:
        pid = 0
    if pid <= 0:
        raise ValueError("Invalid LISTEN_PID")
    if replace_listen_pid or pid == parent_pid:
        new = dict(env)
        new["LISTEN_PID"] = str(own_pid)
        return new
    return None


class Wiring:
    """The fds R gets at 0, 1, 2 (None: keep M's, for passthrough) and what else it needs."""

    __slots__ = ("stdin", "stdout", "stderr", "oom_score_adj", "start_fd")

    def __init__(self, stdin: int | None, stdout: int | None, stderr: int | None,
                 oom_score_adj: bytes | None, start_fd: int | None) -> None:
        self.stdin, self.stdout, self.stderr = stdin, stdout, stderr
        self.oom_score_adj = oom_score_adj
        self.start_fd = start_fd  # exec attach: R blocks on a second start-pipe read


def spawn(argv: list[str], wiring: Wiring, replace_listen_pid: bool,
          env: dict[str, str]) -> int:
    """Fork R and exec the runtime in it with `env` (the engine's environment, whichever
    process received it). Returns R's pid. If exec fails, R writes the reason to its stderr
    (which reaches the engine as the failure message) and exits 127."""
    parent = os.getpid()
    if wiring.start_fd is None:
        try:
            listen_pid = runtime_env(env, replace_listen_pid, parent, 0) is not None
        except ValueError:
            pass  # R reports it, below
        else:
            return _vspawn(argv, wiring, env, listen_pid)
    pid = os.fork()
    if pid:
        return pid
    try:  # in R: only os calls from here on, then exec or _exit
        _prepare_child(wiring, parent)
        changed = runtime_env(env, replace_listen_pid, parent, os.getpid())
        os.execve(argv[0], argv, env if changed is None else changed)
    except BaseException as e:  # noqa: BLE001 - we are a forked child: report and leave
        try:
            os.write(2, f"pymon: failed to execute runtime {argv[0]}: {_describe(e)}\n".encode())
        finally:
            os._exit(127)
    raise AssertionError("unreachable")


def _vspawn(argv: list[str], w: Wiring, env: dict[str, str], listen_pid: bool) -> int:
    from pymon import _native

    slot = list(env).index("LISTEN_PID") if listen_pid else -1
    try:
        return _native.spawn([os.fsencode(a) for a in argv],
                             [os.fsencode(k) + b"=" + os.fsencode(v) for k, v in env.items()],
                             (_fd(w.stdin), _fd(w.stdout), _fd(w.stderr)), w.oom_score_adj,
                             signals.STRAY, slot)
    except _native.SpawnFailed as e:  # R has exited 127: its stderr carries the reason
        try:
            os.write(w.stderr if w.stderr is not None else 2,
                     f"pymon: failed to execute runtime {argv[0]}: {e.strerror}\n".encode())
        except OSError:
            pass
        return e.pid


def _fd(fd: int | None) -> int:
    return -1 if fd is None else fd


def _describe(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__


def _prepare_child(w: Wiring, parent: int) -> None:
    from pymon import _native

    # If M dies while the runtime is creating the container, nobody would reap or report
    # it: let the kernel kill R. Check the parent afterwards to close the race.
    _native.set_pdeathsig(signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)
    # Python-level handlers (SIGTERM forwarding) reset to default at exec by themselves;
    # what we ignore (stray signals) and the mask must be reset explicitly. SIGPIPE stays
    # ignored, as under conmon.
    signals.restore_defaults()
    for target, fd in ((0, w.stdin), (1, w.stdout), (2, w.stderr)):
        if fd is None:
            continue
        if fd != target:
            os.dup2(fd, target)  # dup2 clears CLOEXEC on the target
        else:
            os.set_inheritable(fd, True)
        try:  # a non-root container user may reopen /dev/stdout (conmon 2.1.8+)
            os.fchmod(target, 0o777)
        except OSError as e:
            if e.errno not in (errno.EINVAL, errno.EPERM, errno.EROFS):
                raise
    procattrs.restore_oom_score_adj(w.oom_score_adj)
    if w.start_fd is not None:
        # exec attach (§10): wait until the engine has connected its attach client.
        # EOF means the engine gave up attaching; run the exec anyway, as conmon does.
        try:
            os.read(w.start_fd, 8192)
        except OSError:
            pass


def read_pidfile(path: str) -> int:
    """The container pid written by the runtime. Raises OSError with GLib's wording."""
    try:
        with open(path, "rb") as f:
            text = f.read()
    except OSError as e:
        raise OSError(e.errno, f"Failed to open file \u201c{path}\u201d: {e.strerror}") from None
    try:
        pid = int(text.strip() or b"0")
    except ValueError:
        pid = 0
    if pid <= 0:
        raise OSError(errno.EINVAL, f"Invalid pid \u201c{text[:64]!r}\u201d in pid file \u201c{path}\u201d")
    return pid
