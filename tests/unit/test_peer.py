"""The server's peer check, without root: what a refusal says."""

from __future__ import annotations

import os
import subprocess

import pytest

from pymon.server.peer import Self, status_field
from pymon.server.wire import Rejected


def test_a_launcher_that_has_exited_is_reported_gone_not_in_another_namespace() -> None:
    proc = subprocess.Popen(["true"])
    proc.wait()  # reaped: its /proc entry is gone, and the pid is not reused this soon
    me = Self()
    with pytest.raises(Rejected, match=f"peer {proc.pid} has gone"):
        me.check_peer(proc.pid, os.geteuid(), os.getegid())


def test_a_live_peer_like_us_is_accepted() -> None:
    Self().check_peer(os.getpid(), os.geteuid(), os.getegid())


def test_another_uid_is_refused_first() -> None:
    with pytest.raises(Rejected, match="uid"):
        Self().check_peer(os.getpid(), os.geteuid() + 1, os.getegid())


@pytest.mark.skipif(os.geteuid() != 0, reason="setting another process's groups needs root")
def test_other_supplementary_groups_are_refused() -> None:
    proc = subprocess.Popen(["sleep", "30"], extra_groups=[*os.getgroups(), 54321])
    try:
        with pytest.raises(Rejected, match="supplementary groups"):
            Self().check_peer(proc.pid, os.geteuid(), os.getegid())
    finally:
        proc.kill()
        proc.wait()


def test_a_peer_in_another_namespace_is_refused_by_name() -> None:
    me = Self()
    me.namespaces["uts"] = (0, 0)  # as if the peer's differed from ours
    with pytest.raises(Rejected, match="another uts namespace"):
        me.check_peer(os.getpid(), os.geteuid(), os.getegid())


def test_status_fields_are_found_wherever_they_are() -> None:
    text = b"Name:\tpymon\nGroups:\t1 2 \nCapEff:\t00000000a80425fb"
    assert status_field(text, b"Name") == b"pymon"
    assert status_field(text, b"Groups") == b"1 2"
    assert status_field(text, b"CapEff") == b"00000000a80425fb"  # the last line, no newline
    assert status_field(text, b"Uid") == b""
    assert status_field(b"Groups:\t\n", b"Groups") == b""
