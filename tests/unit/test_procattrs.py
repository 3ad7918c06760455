"""procattrs.close_fds_except: what stays open (run in a forked child: it closes fds)."""

from __future__ import annotations

import fcntl
import json
import os

import pytest

from pymon.procattrs import close_fds_except
from tests.fakes.forked import in_child


def is_open(fd: int) -> bool:
    try:
        fcntl.fcntl(fd, fcntl.F_GETFD)
    except OSError:
        return False
    return True


def open_fds_after(keep_picks: list[int], low: int) -> tuple[set[int], set[int]]:
    """Fork; the child opens pipes, keeps the ones at `keep_picks` (indexes) plus its
    report pipe, closes the rest from `low` up, and reports what is left open."""
    def child(w: int) -> None:
        fds = [fd for _ in range(6) for fd in os.pipe()]
        keep = {fds[i] for i in keep_picks} | {w}
        close_fds_except(keep, low=low)
        left = [fd for fd in range(256) if is_open(fd)]  # opening nothing to look
        os.write(w, json.dumps({"keep": sorted(keep), "left": left}).encode())

    data, status = in_child(child)
    assert status == 0, status
    report = json.loads(data)
    return set(report["keep"]), set(report["left"])


@pytest.mark.parametrize("picks", [[], [0], [0, 1], [3, 7, 11], [11]])
def test_only_the_kept_fds_stay_open_above_low(picks: list[int]) -> None:
    keep, left = open_fds_after(picks, low=3)
    assert left - {0, 1, 2} == keep


def test_low_zero_closes_the_standard_fds_too() -> None:
    keep, left = open_fds_after([2], low=0)
    assert left == keep
