"""The Python launcher (`pymon`, `python -m pymon`, the `-IS` entry point): the warm path
if a server answers, else the cold path in this process."""

from __future__ import annotations

import sys

from pymon.handover import Invocation, open_fds


def main(argv: list[str] | None = None, warm: bool = True) -> int:
    """`warm=False`: the C launcher found no server already (pymon_launch.c)."""
    fds = open_fds(0)  # before we open anything: exactly what the engine passed
    args = sys.argv[1:] if argv is None else argv
    why = None
    if warm:
        from pymon.launcher import client

        try:
            why = client.serve([sys.argv[0], *args], fds)
        except client.Committed as done:
            return done.status
    from pymon.launcher import cold

    return cold.run(Invocation.of_this_process(args, tuple(fd for fd in fds if fd > 2)), why)
