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
few pages again, and an idle one is woken a handful of times a day.
"""

from __future__ import annotations

import trio

from pymon import _native
from pymon.diag import log

FIRST = 1.0  # seconds
LAST = 1000.0


async def give_back_copies() -> None:
    if not _native.has_snapshot():
        return  # a cold monitor, or a server started with --no-snapshot
    delay = FIRST
    while True:
        await trio.sleep(delay)
        try:
            given = _native.give_back()
        except OSError as e:
            log.debug("cannot give back copied pages: %s", e.strerror)
            return
        if given is not None:
            log.debug("gave back %d copied pages, %d kept", *given)
        delay = min(delay * 10, LAST)
