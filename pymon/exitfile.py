"""Exit files, the conmon pidfile, and the exit command (contract §2.4, §8.4, §8.5).

Plain os code with no trio: the exit command also runs after a failed create, before trio
was ever imported, and after trio.run has returned.
"""

from __future__ import annotations

# _signal, not signal: the public module imports enum (~4 ms on the start-up path)
# for IntEnum wrappers we do not need; the functions and constants are the same.
import _signal as signal
import errno
import os
import time

from pymon import procattrs, signals

TYPE_CHECKING = False  # annotations only (PEP 563): not imported at run time
if TYPE_CHECKING:
    from collections.abc import Callable


def write_atomic(path: str, text: str) -> None:
    """Create `path.XXXXXX` (O_EXCL, 0666 & ~umask), write, rename: a reader that sees the
    file sees all of it (podman stats it, then reads it with Atoi)."""
    data = text.encode()
    base = f"{path}.{os.getpid():x}"
    for attempt in range(100):
        tmp = f"{base}{attempt}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        except FileExistsError:
            continue
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        os.close(fd)
        try:
            os.rename(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
        return
    raise FileExistsError(errno.EEXIST, f"could not create a temporary file for {path}")


def exit_status(wait_status: int) -> int:
    """waitpid status -> conmon's value: the exit code, 128+N for signal N, else -1."""
    if os.WIFEXITED(wait_status):
        return os.WEXITSTATUS(wait_status)
    if os.WIFSIGNALED(wait_status):
        return 128 + os.WTERMSIG(wait_status)
    return -1


def write_exit_files(exit_dir: str | None, persist_dir: str | None, cid: str,
                     status: int) -> None:
    """<persist-dir>/exit first, then <exit-dir>/<cid> (the file podman waits for)."""
    text = str(status)
    if persist_dir:
        write_atomic(os.path.join(persist_dir, "exit"), text)
    if exit_dir:
        write_atomic(os.path.join(exit_dir, cid), text)


def run_exit_command(command: str, args: tuple[str, ...], delay: int,
                     oom_score_adj: bytes | None, keep: frozenset[int] = frozenset(),
                     forked: Callable[[], None] | None = None) -> None:
    """Close our fds but `keep` (the sync pipe included, so the engine sees EOF), leave
    subreaper mode, fork X, exec the command after `delay` seconds, and wait for X and every
    other child. Its status does not change ours (conmon's observable behaviour). X inherits
    none of `keep`: they are CLOEXEC. `forked` is called once X exists (a warm monitor tells
    its server that nothing is left to rescue)."""
    from pymon import _native

    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    procattrs.close_fds_except(keep)
    try:
        _native.set_child_subreaper(False)
    except OSError:
        pass
    if delay <= 0:
        pid = _vspawn_exit_command(command, args, oom_score_adj)
    else:
        pid = os.fork()
    if pid == 0:
        try:
            # X gets a clean signal state (conmon leaks its blocked SIGCHLD/SIGUSR1; we don't).
            signals.restore_defaults()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
                signal.signal(sig, signal.SIG_DFL)
            if delay > 0:
                time.sleep(delay)
            procattrs.restore_oom_score_adj(oom_score_adj)
            os.execv(command, [command, *args])
        finally:
            os._exit(1)
    if forked is not None:
        forked()
    wait_all_children()


def _vspawn_exit_command(command: str, args: tuple[str, ...],
                         oom_score_adj: bytes | None) -> int:
    """X without a delay, as the forked child below sets it up, with vfork (see
    pymon/_native/_build.py). Returns its pid (-1: it could not be started)."""
    from pymon import _native

    try:
        return _native.spawn([os.fsencode(a) for a in (command, *args)],
                             [k + b"=" + v for k, v in os.environb.items()], (-1, -1, -1),
                             oom_score_adj,
                             (*signals.STRAY, signal.SIGTERM, signal.SIGINT, signal.SIGQUIT), -1)
    except OSError:
        return -1  # not started (or exited 127 at once): its status does not change ours


def wait_all_children() -> None:
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return
        except InterruptedError:
            continue

