"""The runtime's verdict: wait for R (in terminal mode while taking the pty master it
sends), then turn its exit status, stderr and pid file into the container pid or the
failure text the engine gets on the sync pipe (contract §3.3)."""

from __future__ import annotations

import os

from pymon import runtime
from pymon.config import Config, explain_bad_exec_spec
from pymon.diag import log
from pymon.exitfile import exit_status

TYPE_CHECKING = False  # annotations only (PEP 563): these are not imported at run time
if TYPE_CHECKING:
    from collections.abc import Callable

    from pymon import sockets

RUNTIME_STDERR_MAX = 8191  # what conmon reads of a failed runtime's stderr


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
