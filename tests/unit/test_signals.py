"""Signal dispositions (signals.py) and the SIGUSR1 state line (status.format_state)."""

from __future__ import annotations

import os
import signal

from pymon import signals
from pymon.status import State, format_state
from tests.fakes.forked import in_child


def test_state_line() -> None:
    s = State(pid=42, running=True, relayed=(("stdout", 10), ("stderr", 0)), attach_clients=2,
              attach_stalled=1, log_size=1234, dropped_lines=3, dropped_bytes=171,
              given_back=(2, 630, 880))
    assert format_state(s) == ("state: container pid 42 running; relayed stdout 10 bytes, "
                               "stderr 0 bytes; 2 attach clients (1 dropped as stalled); "
                               "log file 1234 bytes; 3 log lines (171 bytes) dropped; "
                               "630 copied pages given back in 2 passes (880 kept)")
    quiet = State(pid=7, running=False, relayed=(), attach_clients=None, attach_stalled=0,
                  log_size=None, dropped_lines=0, dropped_bytes=0, given_back=None)
    assert format_state(quiet) == ("state: container pid 7 exited; relayed nothing (no output "
                                   "streams); no attach socket; no log file; 0 log lines "
                                   "(0 bytes) dropped")


def _sig_mask(status: str, field: str) -> int:
    line = next(x for x in status.splitlines() if x.startswith(field + ":"))
    return int(line.split()[1], 16)


def test_stray_signals_ignored_then_restored_for_exec() -> None:
    """In a forked child (our own state untouched): ignore_stray survives every stray
    signal; restore_defaults gives an exec'd program default dispositions, empty mask."""
    def child(w: int) -> None:
        signals.ignore_stray()
        for sig in signals.STRAY:
            os.kill(os.getpid(), sig)  # would end us with its default action
        signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])
        signals.restore_defaults()
        os.dup2(w, 1)
        os.execv("/bin/cat", ["cat", "/proc/self/status"])

    out, status = in_child(child)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    text = out.decode()
    stray_bits = sum(1 << (sig - 1) for sig in signals.STRAY)
    assert _sig_mask(text, "SigIgn") & stray_bits == 0
    assert _sig_mask(text, "SigBlk") == 0
