"""proctree's pure part: /proc/PID/stat parsing and the choice of the tree to kill."""

from __future__ import annotations

import os

from pymon.proctree import ProcStat, parse_stat, scan, select_tree


def stat_line(pid: int, comm: str, state: str, ppid: int, pgrp: int, session: int,
              start: int) -> str:
    fields = [state, ppid, pgrp, session] + [0] * 15 + [start] + [0] * 30
    return f"{pid} ({comm}) " + " ".join(str(f) for f in fields) + "\n"


def test_parse_stat_comm_with_spaces_and_parens() -> None:
    s = parse_stat(42, stat_line(42, "a) (b c", "S", 7, 42, 40, 123456))
    assert (s.pid, s.state, s.ppid, s.pgrp, s.session, s.start) == (42, "S", 7, 42, 40, 123456)


def test_parse_stat_of_this_process() -> None:
    with open("/proc/self/stat") as f:
        s = parse_stat(os.getpid(), f.read())
    assert (s.ppid, s.pgrp, s.session) == (os.getppid(), os.getpgrp(), os.getsid(0))
    assert scan([str(os.getpid()), "self", "x"])[os.getpid()].start == s.start


def procs(*rows: tuple[int, int, int]) -> dict[int, ProcStat]:
    """(pid, ppid, session) rows."""
    return {pid: ProcStat(pid, "S", ppid, pid, session, pid) for pid, ppid, session in rows}


def test_tree_is_descendants_and_session() -> None:
    table = procs(
        (1, 0, 1),        # the pod's init
        (10, 5, 10),      # the exec'd root: a session leader (runc setsid's it)
        (11, 10, 10),     # its child
        (12, 11, 12),     # a grandchild that left the session (setsid)
        (13, 12, 12),     # below it
        (14, 1, 10),      # in the session, re-parented to init (its parent died)
        (20, 1, 20),      # someone else
        (5, 1, 5))        # the monitor
    assert select_tree(10, table) == {10, 11, 12, 13, 14}


def test_tree_root_not_session_leader_takes_no_session() -> None:
    table = procs((10, 5, 3), (11, 10, 3), (30, 1, 3))
    assert select_tree(10, table) == {10, 11}


def test_tree_of_a_gone_root() -> None:
    """Reaped already: nothing is chosen by session (its number may be anyone's)."""
    table = procs((11, 1, 10), (12, 11, 10))
    assert select_tree(10, table) == set()
