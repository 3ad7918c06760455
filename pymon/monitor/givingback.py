"""A warm monitor gives back the pages it copied from the server and no longer changes.

Forked from a server whose memory is a snapshot file (pymon/server/snapshot.py), a monitor
holds a private copy of every page it has written. Once the container runs and the monitor
waits, many of those copies hold again what the snapshot holds (a reference count back
where it was, a cache refilled as it was): ~550 of the ~1400 pages a monitor has copied a
second after its start, measured. Giving them back (pymon_give_back in _native/_build.py:
compare with the snapshot, MADV_DONTNEED the equal ones) costs 1-3 ms of CPU.

When: a second after the container's life began (the set-up's copies are settled; CRI-O's
ExecSync probes and short `podman exec` sessions are gone by then and never pay), then ten
times further apart each time, up to every 1000 s: a monitor that relays output copies a
few pages again. A POSIX timer's signal runs each pass in C, in the handler, while the
monitor sleeps: no Python runs for it, so the monitor is not woken and its Python does not
copy again the pages just given back (a pass run from a trio task left ~80 pages for the
next one to find).
"""

from __future__ import annotations

from pymon import _native
from pymon.diag import log

FIRST = 1.0  # seconds
LAST = 1000.0


_armed = False


def start() -> None:
    """Arm the timer in a warm monitor whose server took a snapshot (not in a cold
    monitor, nor under a server started with --no-snapshot)."""
    global _armed
    try:
        _armed = _native.give_back_on_timer(FIRST, LAST)
    except OSError as e:
        log.debug("cannot give back copied pages: %s", e.strerror)


def stats() -> tuple[int, int, int] | None:
    """For the SIGUSR1 report: (passes, pages given back in all, private copies kept at
    the last pass), or None when no timer is armed."""
    return _native.give_back_stats() if _armed else None
