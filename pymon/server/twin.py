"""In a monitor forked by the server: become the launcher's twin, then run the monitor.

The server forked us after taking the launcher's token (handover.py): the invocation is
ours. We install the launcher's fds at their numbers (closing every fd of the server's),
its environment, cwd, umask, rlimits, nice value, oom_score_adj and signal state, then run
what the cold path runs (prepare, the start pipe), join the launcher's cgroups before
forking anything, and tell the launcher to go (it writes the conmon pidfile) or, with
--sync, to wait for our exit status. A failure to mirror the launcher is reported on the
sync pipe once we know it, as the cold monitor's set-up failures are, and M exits 1.
"""

from __future__ import annotations

import _signal as signal
import fcntl
import gc
import os
import resource
import time
from collections.abc import Callable
from typing import NoReturn

from pymon import handover, logformat, procattrs, sync
from pymon.cli import parse_args
from pymon.config import build_config
from pymon.diag import log
from pymon.errors import PymonError, SetupError
from pymon.handover import Invocation
from pymon.launcher import client
from pymon.monitor.lifeline import Lifeline
from pymon.monitor.prepare import Prepared, begin, prepare, write_all
from pymon.monitor.setup import monitor_process
from pymon.server import cgroups
from pymon.server.wire import MASK64, Request, decode_request


def _install_fds(targets: list[int], received: list[int], conn: int,
                 lifeline: int | None) -> tuple[int, int | None]:
    """Place the received fds at the launcher's numbers and close everything else of the
    server's, 0-2 included. Returns the new fds of the connection and of the rescue
    channel (CLOEXEC, above them all)."""
    base = max([*targets, *received, conn, lifeline or 0, 2]) + 1
    conn = fcntl.fcntl(conn, fcntl.F_DUPFD_CLOEXEC, base)
    if lifeline is not None:
        lifeline = fcntl.fcntl(lifeline, fcntl.F_DUPFD_CLOEXEC, base)
    staged = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, base) for fd in received]
    keep = {conn, *staged} | ({lifeline} if lifeline is not None else set())
    procattrs.close_fds_except(keep, low=0)
    for target, fd in zip(targets, staged):
        os.dup2(fd, target)  # inheritable, as every fd the engine passed is
        os.close(fd)
    return conn, lifeline


class _Dispositions:
    """This process's signal state as Python's table has it: which signals are ignored,
    which have a Python handler, which are blocked. The server notes it once (note());
    a monitor forked from it then sets only the dispositions it wants changed, where it
    asked Python about all 64 on every launch. Unknown (None) until noted."""

    ignored: int | None = None
    handled = 0
    blocked = 0

    @classmethod
    def note(cls) -> None:
        ignored = handled = 0
        for sig in range(1, signal.NSIG):
            try:
                handler = signal.getsignal(sig)
            except (OSError, ValueError):
                continue
            if handler == signal.SIG_IGN:
                ignored |= 1 << (sig - 1)
            elif handler is not None and handler != signal.SIG_DFL:
                handled |= 1 << (sig - 1)
            # None: not Python's to set (the C library's reserved real-time signals)
        cls.ignored, cls.handled = ignored, handled
        cls.blocked = 0
        for sig in signal.pthread_sigmask(signal.SIG_BLOCK, []):
            cls.blocked |= 1 << (int(sig) - 1)


note_signals = _Dispositions.note
_UNCATCHABLE = 1 << (signal.SIGKILL - 1) | 1 << (signal.SIGSTOP - 1)
# Python ignores these at start-up in every interpreter, so a cold monitor has them ignored
# whatever the engine passed; the server's are the same.
_PYTHON_IGNORED = 1 << (signal.SIGPIPE - 1) | 1 << (signal.SIGXFSZ - 1)


def _signal_state(blocked: int, ignored: int) -> None:
    signal.set_wakeup_fd(-1)
    want = (ignored | _PYTHON_IGNORED) & ~_UNCATCHABLE
    now = _Dispositions
    if now.ignored is None:  # not noted: every signal, as Python records it
        change = MASK64 & ~_UNCATCHABLE
    else:
        change = (want ^ now.ignored) | now.handled
    sig = 1
    while change:
        if change & 1 and sig != signal.SIGKILL and sig != signal.SIGSTOP:
            handler = signal.SIG_IGN if want >> (sig - 1) & 1 else signal.SIG_DFL
            try:
                # Python records every disposition (it read them all at start-up, and
                # sets them through signal()): only those that differ cost a syscall
                if signal.getsignal(sig) != handler:
                    signal.signal(sig, handler)
            except (OSError, ValueError):
                pass  # the reserved real-time signals of the C library
        change >>= 1
        sig += 1
    if now.ignored is not None:
        now.ignored, now.handled = want, 0
    if now.ignored is None or blocked != now.blocked:
        signal.pthread_sigmask(signal.SIG_SETMASK,
                               [s for s in range(1, signal.NSIG) if blocked >> (s - 1) & 1])
        now.blocked = blocked


def _process_state(req: Request) -> str | None:
    """Environment, cwd, umask, rlimits, nice, oom_score_adj. Returns what could not be
    mirrored, for the sync pipe, or None."""
    problem = None
    # By difference (the bytes view shares os.environ's data, and putenv/unsetenv keep
    # the C environ in step): clearing and refilling cost ~0.2 ms, most of it undone work
    wanted: dict[bytes, bytes] = {}
    for entry in req.env:
        key, _, value = entry.partition(b"=")
        wanted[key] = value  # a repeated name: the last one, as putenv in order would
    env = os.environb
    for key in [k for k in env if k not in wanted]:
        del env[key]
    for key, value in wanted.items():
        if env.get(key) != value:
            env[key] = value
    # Timestamps in the k8s log use the launcher's TZ, as a cold monitor's would
    time.tzset()
    logformat.reset_timestamp_cache()
    try:
        os.chdir(req.cwd)
    except OSError as e:
        problem = f"Failed to change to the launcher's directory: {e.strerror}"
    os.umask(req.umask)
    for lim in req.rlimits:
        want = (resource.RLIM_INFINITY if lim.soft == -1 else lim.soft,
                resource.RLIM_INFINITY if lim.hard == -1 else lim.hard)
        try:
            if resource.getrlimit(lim.resource) != want:
                resource.setrlimit(lim.resource, want)
        except (OSError, ValueError) as e:
            problem = problem or f"Failed to set rlimit {lim.resource}: {e}"
    try:
        if os.getpriority(os.PRIO_PROCESS, 0) != req.nice:
            os.setpriority(os.PRIO_PROCESS, 0, req.nice)
    except OSError as e:
        problem = problem or f"Failed to set the launcher's nice value: {e.strerror}"
    try:
        with open("/proc/self/oom_score_adj", "r+b", buffering=0) as f:
            if int(f.read()) != req.oom_score_adj:
                f.write(str(req.oom_score_adj).encode())
    except (OSError, ValueError) as e:
        problem = problem or f"Failed to set the launcher's oom_score_adj: {e}"
    try:  # the process name a cold monitor would have: its executable's
        with open("/proc/self/comm", "wb", buffering=0) as f:
            f.write(os.path.basename(req.argv[0])[:15])
    except OSError:
        pass
    return problem


# The argv of CRI-O's ExecSync (exec probes: the most frequent launch on a node), for
# rehearse(); podman's create parses through the same code, most of it
_SAMPLE_ARGV = (
    "-c", "0" * 64, "-n", "k8s_probe", "-r", "/bin/true", "-p", "/run/pidfile", "-e",
    "-l", "/run/log", "--socket-dir-path", "/run", "--log-level", "info", "--sync",
    "--log-global-size-max", "16777216", "-T", "5", "--exec-process-spec", "/run/spec",
    "--runtime-arg", "--root=/run/runc")


def leave_server(keep: tuple[int, ...]) -> None:
    """In a spare (spare.py), at once: none of the server's fds but `keep` and 0-2, and
    none of its signal handlers (a SIGTERM ends a spare; Python's wake-up fd is the
    server's pipe)."""
    signal.set_wakeup_fd(-1)
    handled = _Dispositions.handled  # noted by the server before it forked any spare
    sig = 1
    while handled:
        if handled & 1:
            try:
                signal.signal(sig, signal.SIG_DFL)
            except (OSError, ValueError):
                pass
        handled >>= 1
        sig += 1
    _Dispositions.handled = 0
    procattrs.close_fds_except(set(keep), low=3)


def sample_request(name: str | None = None) -> bytes:
    """A request for rehearse(): this process's own state, as a launcher would send it,
    with the argv of CRI-O's ExecSync, whose first word (the process name a monitor takes)
    is `name`, else our own name. Made once by the server, for each spare to use."""
    comm = name or procattrs.read_small("/proc/self/comm").strip()
    return client.request([comm, *_SAMPLE_ARGV], ())


def rehearse(sample: bytes) -> None:
    """run()'s Python up to its first side effect, on values that change nothing: the
    server's own state and CRI-O's ExecSync argv (`sample`: sample_request()). A
    spare (spare.py) does this before any launcher waits for it, so that the pages a
    monitor's set-up writes are copied by then (each copy is a fault, ~3 us on these VMs),
    not on the launcher's time."""
    gc.freeze()
    req = decode_request(sample, 0)
    _signal_state(req.sig_blocked & MASK64, req.sig_ignored & MASK64)
    _process_state(req)
    inv = _invocation(req)
    try:
        parsed = parse_args(list(inv.args))
        if not isinstance(parsed, str):
            build_config(parsed, inv.cwd)
    except PymonError:
        pass  # a path of the sample's that this host lacks: rehearsed up to there


def _invocation(req: Request) -> Invocation:
    """The invocation a monitor prepares from, once _process_state has made the launcher's
    environment ours."""
    return Invocation(tuple(os.fsdecode(a) for a in req.argv[1:]), dict(os.environ),
                      os.fsdecode(req.cwd), req.umask, tuple(fd for fd in req.fds if fd > 2))


def forked(what: str, work: Callable[[], int]) -> NoReturn:
    """The life of a child the server forked (a monitor, a spare, a replacement): `work`'s
    status, or 1 with a diagnostic on the stderr it has by then if `work` raised. Never
    returns into the server's code."""
    status = 1
    try:
        status = work()
    except BaseException as e:  # noqa: BLE001 - a forked child: report and leave
        try:
            os.write(2, f"[conmon:e]: {what} failed: {e!r}\n".encode())
        except OSError:
            pass
    finally:
        os._exit(status)


def _send(conn: int, kind: str, value: int = 0, text: str = "") -> None:
    try:
        os.write(conn, handover.encode_reply(kind, value, text))
    except OSError:
        pass  # the launcher is gone: the engine will see it exit abnormally


def run(req: Request, conn: int, received: list[int], mounts: list[cgroups.Mount],
        channel: int | None) -> int:
    """The forked child's whole life; returns its exit status. `channel` is the monitor's
    end of its rescue channel (pymon/server/rescue.py)."""
    # What the server allocated after its warm-up froze the heap (its own state, the
    # records of the monitors forked before this one) is ours to share, not to collect:
    # a collection here would write to every page that holds one of those objects.
    gc.freeze()
    _signal_state(req.sig_blocked & MASK64, req.sig_ignored & MASK64)
    conn, channel = _install_fds(list(req.fds), received, conn, channel)
    log.__init__()  # type: ignore[misc]  # the server's rate-limit state is not ours
    # No at-fork hook has run (the server forks with _native.fork): random is not
    # reseeded, so siblings share its sequence; pymon takes its names from os.urandom
    problem = _process_state(req)
    begin()
    inv = _invocation(req)
    try:
        prep = prepare(inv)
        if isinstance(prep, str):
            write_all(1, prep.encode())
            _send(conn, handover.EXITED, 0)
            return 0
    except PymonError as e:
        try:
            os.write(2, e.render().encode(errors="replace"))
        except OSError:
            pass
        _send(conn, handover.EXITED, e.status)
        return e.status
    # The start byte has come: the engine has moved the launcher. Join it before anything
    # is forked (contract §2.7), and while the launcher is still there to be read.
    if problem is None:
        try:
            cgroups.join(req.pid, mounts)
        except OSError as e:
            problem = f"Failed to join the launcher's cgroups: {e.strerror or e}"
    sync_mode = prep.config.opts.sync
    if sync_mode:
        _send(conn, handover.RUNNING, os.getpid())
        keep = frozenset((conn,))
    else:
        _send(conn, handover.DETACHED, os.getpid(), prep.config.opts.conmon_pidfile or "")
        os.close(conn)
        keep = frozenset()
    status = 1
    try:
        if problem is not None:
            _report(prep, problem)
        else:
            status = monitor_process(prep, keep,
                                     Lifeline(channel) if channel is not None else None)
    except PymonError:
        status = 1  # already on the sync pipe (monitor_process sends it)
    finally:
        if sync_mode:
            _send(conn, handover.EXITED, status)
    return status


def _report(prep: Prepared, problem: str) -> None:
    """A request that cannot be honoured after the fork: the engine learns why on the sync
    pipe, as it does for the cold monitor's set-up failures."""
    log.error("%s", problem)
    key = sync.message_key(prep.config.api_version, prep.config.opts.exec)
    try:
        sync.send(prep.sync_fd, sync.encode(key, -1, str(SetupError(problem))))
    except OSError:
        pass
