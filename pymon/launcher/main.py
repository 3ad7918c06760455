"""The Python launcher (`pymon`, `python -m pymon`, the `-IS` entry point): the warm path
if a server answers, else the cold path in this process."""

from __future__ import annotations

import _signal as signal
import os
import sys

from pymon import signals
from pymon.handover import Invocation, open_fds


def main(argv: list[str] | None = None, warm: bool = True) -> int:
    """`warm=False`: the C launcher found no server already (pymon_launch.c)."""
    fds = open_fds(0)  # before we open anything: exactly what the engine passed
    args = sys.argv[1:] if argv is None else argv
    # As P0 does on the cold path, whichever path this becomes: until the monitor has
    # taken over, SIGTERM ends us with 1, and a stray signal does not end us at all.
    signal.signal(signal.SIGTERM, lambda *_: os._exit(1))
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signals.ignore_stray()
    why = None
    if warm:
        from pymon.launcher import client

        try:
            why = client.serve([sys.argv[0], *args], fds)
        except client.Committed as done:
            return done.status
    from pymon.launcher import cold

    return cold.run(Invocation.of_this_process(args, tuple(fd for fd in fds if fd > 2)), why)
