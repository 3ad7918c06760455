"""The cold path: this interpreter becomes P0 and forks M itself, as conmon does.

P0 parses and checks the invocation, waits for the start byte, forks M, writes the conmon
pidfile with M's pid and exits 0; failures after the fork reach the engine on the sync
pipe. With --sync P0 does not fork: it is M.
"""

from __future__ import annotations

import os
import _signal as signal

from pymon.diag import log
from pymon.errors import PymonError
from pymon.exitfile import write_atomic
from pymon.handover import Invocation
from pymon.monitor.prepare import begin, prepare, write_all
from pymon.monitor.setup import monitor_process


def run(inv: Invocation, why_not_warm: str | None = None) -> int:
    begin()
    try:
        prep = prepare(inv)
        if isinstance(prep, str):
            write_all(1, prep.encode())
            return 0
        if why_not_warm:
            log.debug("warm monitor unavailable (%s), running cold", why_not_warm)
        if not prep.config.opts.sync:
            daemonize(prep.config.opts.conmon_pidfile)
        return monitor_process(prep)
    except PymonError as e:
        try:
            os.write(2, e.render().encode(errors="replace"))
        except OSError:
            pass
        return e.status


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
