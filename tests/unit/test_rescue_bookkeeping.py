"""The server's rescue bookkeeping, driven by real socketpairs and pipes but no fork: what
it holds for a monitor, and when it lets go (no root)."""

from __future__ import annotations

import os
import select
import socket

from pymon.server import rescuewire as rw
from pymon.server.rescue import Rescuer
from pymon.server.wire import Request

MONITOR, CONTAINER = 4_000_001, 4_000_002  # above pid_max: never a real process


def request() -> Request:
    return Request(protocol=1, version="0.1.0", pid=1, argv=[b"pymon", b"-c", b"ctr-id"],
                   env=[], cwd=b"/", umask=0o22, fds=[], rlimits=[], oom_score_adj=0,
                   sig_blocked=0, sig_ignored=0, nice=0)


def setup() -> tuple[Rescuer, socket.socket, list[str]]:
    said: list[str] = []
    rescuer = Rescuer(select.poll(), [], said.append, said.append)
    pair = rescuer.channel()
    assert pair is not None
    ours, theirs = pair
    rescuer.watch(MONITOR, ours, request())
    return rescuer, theirs, said


def is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def test_register_exited_done() -> None:
    rescuer, monitor, said = setup()
    r, w = os.pipe()
    try:
        socket.send_fds(monitor, [rw.encode_register(CONTAINER, "o")], [r])
        rescuer.readable(next(iter(rescuer.channels)))
        watch = rescuer.watches[MONITOR]
        assert watch.registered == rw.Registered(CONTAINER, "o")
        assert rescuer.containers[CONTAINER] is watch
        (role, dup), = watch.fds
        assert role == "o" and os.fstat(dup).st_ino == os.fstat(r).st_ino
        monitor.send(rw.encode_exited(7))
        rescuer.readable(next(iter(rescuer.channels)))
        assert watch.code == 7 and CONTAINER not in rescuer.containers
        monitor.send(rw.encode_done())
        rescuer.readable(next(iter(rescuer.channels)))
        assert watch.done and watch.fds == [] and not is_open(dup)
        assert rescuer.channels == {}
        rescuer.reaped(MONITOR, 0)  # a normal end: nothing to rescue, nothing kept
        assert rescuer.watches == {} and rescuer.rescued == 0
    finally:
        os.close(r)
        os.close(w)
        monitor.close()
    assert "takes over" not in " ".join(said)


def test_container_reaped_before_its_monitor() -> None:
    """A dead monitor's zombie container may be reaped first: its status is kept for the
    rescue, and a REGISTER not read yet is read then."""
    rescuer, monitor, _ = setup()
    socket.send_fds(monitor, [rw.encode_register(CONTAINER, "")], [])
    rescuer.reaped(CONTAINER, 5 << 8)
    watch = rescuer.watches[MONITOR]
    assert watch.container_status == 5 << 8 and CONTAINER not in rescuer.containers
    monitor.close()
    rescuer.close()


def test_a_reaped_exec_monitor_reads_no_channel() -> None:
    """An exec session's monitor has no channel; when it is reaped the server knows it
    forked it, so it reads none of the running monitors' channels looking for a REGISTER
    (what it does for a pid it cannot place: a container re-parented to it)."""
    rescuer, monitor, _ = setup()
    socket.send_fds(monitor, [rw.encode_register(CONTAINER, "")], [])
    rescuer.reaped(MONITOR + 10, 0, monitor=True)
    assert CONTAINER not in rescuer.containers  # the REGISTER is still queued
    rescuer.reaped(MONITOR + 11, 0)  # an unknown child: the channels are read
    assert rescuer.containers[CONTAINER] is rescuer.watches[MONITOR]
    monitor.close()
    rescuer.close()


def test_bad_messages_are_dropped_with_their_fds() -> None:
    rescuer, monitor, said = setup()
    r, w = os.pipe()
    try:
        socket.send_fds(monitor, [rw.encode_exited(1)], [r])  # fds where none belong
        rescuer.readable(next(iter(rescuer.channels)))
        assert any("bad rescue message" in s for s in said)
        assert rescuer.watches[MONITOR].registered is None
        monitor.close()  # EOF: the channel is closed, the watch waits for the reap
        rescuer.readable(next(iter(rescuer.channels)))
        assert rescuer.channels == {}
        rescuer.reaped(MONITOR, 9)  # killed before registering: nothing to rescue
        assert rescuer.watches == {} and rescuer.rescued == 0
    finally:
        os.close(r)
        os.close(w)


def test_unknown_children_are_ignored() -> None:
    rescuer, monitor, _ = setup()
    rescuer.reaped(CONTAINER + 1, 0)  # an orphan re-parented to the server
    assert set(rescuer.watches) == {MONITOR}
    monitor.close()
    rescuer.close()
