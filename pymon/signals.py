"""Signal dispositions of the monitor's own processes, before trio (pure os, no trio).

A signal whose default action ends the process would end the monitor, and with it the
container's exit: nobody would write the exit file. Every signal has a meaning here
(the man page lists them):

* SIGTERM, SIGINT, SIGQUIT: forwarded to the container (launch._Forwarder until trio
  runs, then reaper.forward_signals); SIGTERM before the runtime is forked ends P0/M
  with 1 (launch.main), SIGINT there keeps its default.
* SIGCHLD: reaping (reaper.py).
* SIGUSR1: a one-line state report in the diagnostics once the monitor runs
  (status.py); ignored before.
* STRAY (SIGHUP, SIGUSR2, SIGALRM, ..., the real-time signals): ignored. SIGXFSZ included: a log file over
  RLIMIT_FSIZE fails its writes with EFBIG, which the log sink survives.
* SIGPIPE: ignored (Python's start-up sets that), as under conmon.

Ignored dispositions survive execve, unlike handlers: the runtime, the container and the
exit command get them back to default with `restore_defaults` in the forked child.
"""

from __future__ import annotations

# _signal, not signal: the public module imports enum (~4 ms on the start-up path)
# for IntEnum wrappers we do not need; the functions and constants are the same.
import _signal as signal

# Signals that would end the monitor by default and have no other meaning for it: all of
# them but SIGKILL, SIGTERM/SIGINT/SIGQUIT (forwarded), and those that report a fault of
# the process itself or its CPU limit (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGSYS,
# SIGTRAP, SIGXCPU). The real-time signals from SIGRTMIN on are free for applications
# (glibc keeps the two below it for itself).
STRAY = (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM, signal.SIGVTALRM,
         signal.SIGPROF, signal.SIGIO, signal.SIGPWR, signal.SIGSTKFLT, signal.SIGXFSZ,
         *range(signal.SIGRTMIN, signal.SIGRTMAX + 1))


def ignore_stray() -> None:
    """Call first thing in P0 (M and forked helpers inherit it). Under trio, SIGUSR1 is
    taken over by the state report while the container runs and falls back to this."""
    for sig in STRAY:
        signal.signal(sig, signal.SIG_IGN)


def restore_defaults() -> None:
    """In a forked child about to exec something that is not ours (R, X): default
    dispositions for what we ignore, and an empty mask."""
    for sig in STRAY:
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
