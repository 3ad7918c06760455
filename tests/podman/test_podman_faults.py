"""Operator faults against real podman with pymon as its conmon: stray signals sent to the
monitor must not lose the container's exit (conmon dies of SIGHUP, SIGUSR2, SIGALRM);
attach clients that reconnect in a loop or never read cost neither fds nor time."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pymon.signals import STRAY
from tests.fakes.attach_client import connect, read_until_eof
from tests.fakes.engine import wait_for
from tests.integration.test_lifecycle import parse_log
from tests.podman.conftest import IMAGE, Monitors, Podman, podman_available
from tests.podman.test_podman import assert_exited, assert_pymon_monitors

pytestmark = [pytest.mark.podman,
              pytest.mark.skipif(not podman_available(),
                                 reason="needs root, podman, runc and busybox-static")]


@pytest.mark.timeout(90)
def test_stray_signals_to_the_monitor_keep_the_exit(podman: Podman, monitors: Monitors) -> None:
    cid = podman.run_d("--name", "stray", IMAGE, "sh", "-c",
                       "echo up; until [ -e /tmp/go ]; do sleep 0.02; done; echo done; exit 5")
    monitor = assert_pymon_monitors(podman, monitors, cid)
    podman.wait_logs("stray", b"up\n")
    for sig in (*STRAY, signal.SIGUSR1):  # SIGUSR1 again: also a report, never an exit
        os.kill(monitor, sig)
    podman.ok("exec", "stray", "sh", "-c", ": > /tmp/go")
    # a dead monitor writes no exit file: podman wait would never return
    assert podman.ok("wait", "stray") == b"5\n"
    assert_exited(podman, "stray", 5)
    assert podman("logs", "stray").stdout == b"up\ndone\n"  # nothing lost from the log


def attach_socket(monitor: int) -> Path:
    """The attach socket of a pymon monitor: `<bundle>/attach`, the bundle from its -b."""
    argv = Path(f"/proc/{monitor}/cmdline").read_bytes().split(b"\0")
    return Path(argv[argv.index(b"-b") + 1].decode()) / "attach"


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.mark.timeout(90)
def test_attach_clients_reconnecting_in_a_loop_leave_no_fds(podman: Podman,
                                                            monitors: Monitors) -> None:
    cid = podman.run_d("--name", "quiet", IMAGE, "sh", "-c",
                       "echo up; until [ -e /tmp/go ]; do sleep 0.02; done")
    monitor = assert_pymon_monitors(podman, monitors, cid)
    podman.wait_logs("quiet", b"up\n")
    sock_path = attach_socket(monitor)
    base = fd_count(monitor)
    for _ in range(300):  # connect + close on a container that writes nothing
        connect(sock_path).close()
    wait_for(lambda: fd_count(monitor) == base, timeout=1, what="the monitor's fds released")
    podman.ok("exec", "quiet", "sh", "-c", ": > /tmp/go")
    assert podman.ok("wait", "quiet") == b"0\n"


def _stalled_run(podman: Podman, monitors: Monitors, name: str, count: int) -> float:
    """Seconds from the go signal to the container's exit, writing 16 MiB while `count`
    attach clients never read."""
    cid = podman.run_d("--name", name, IMAGE, "sh", "-c",
                       "echo up; until [ -e /tmp/go ]; do sleep 0.02; done; "
                       f"yes 0123456789abcdefghijklmnopqrstuvwxyz | head -c {16 << 20}")
    monitor = assert_pymon_monitors(podman, monitors, cid)
    podman.wait_logs(name, b"up\n")
    stalled = [connect(attach_socket(monitor)) for _ in range(count)]
    try:
        start = time.monotonic()
        podman.ok("exec", name, "sh", "-c", ": > /tmp/go")
        assert podman.ok("wait", name) == b"0\n"
        return time.monotonic() - start
    finally:
        for sock in stalled:
            sock.close()


@pytest.mark.timeout(120)
def test_many_stalled_attach_clients_cost_no_more_than_one(podman: Podman,
                                                           monitors: Monitors) -> None:
    one = _stalled_run(podman, monitors, "stalled-1", 1)
    twelve = _stalled_run(podman, monitors, "stalled-12", 12)
    print(f"podman: container held {one:.2f}s by 1 stalled client, {twelve:.2f}s by 12")
    assert twelve <= one + 1.0


@pytest.fixture
def mib_tmpfs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "mib"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], check=True)
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=True)


@pytest.mark.timeout(120)
def test_log_on_a_full_disk_stays_readable(podman: Podman, monitors: Monitors,
                                           mib_tmpfs: Path) -> None:
    """The container's log on a 1 MiB tmpfs half taken: written until ENOSPC, then the
    space comes back and it goes on. `podman logs` reads a log whose every record is whole:
    the lines it shows are lines the container wrote, in order, and none written after the
    space came back is missing."""
    before, after = 20000, 2000
    filler = mib_tmpfs / "filler"
    filler.write_bytes(b"\0" * (512 << 10))
    log = mib_tmpfs / "ctr.log"
    cid = podman.run_d("--name", "full", "--log-opt", f"path={log}", IMAGE, "sh", "-c",
                       "until [ -e /tmp/start ]; do sleep 0.02; done; "
                       f"i=0; while [ $i -lt {before} ]; do echo before$i; i=$((i+1)); done; "
                       "echo waiting; until [ -e /tmp/go ]; do sleep 0.02; done; "
                       f"i=0; while [ $i -lt {after} ]; do echo after$i; i=$((i+1)); done")
    monitor = assert_pymon_monitors(podman, monitors, cid)
    reader = connect(attach_socket(monitor))  # sees all the output, whatever the disk says
    try:
        podman.ok("exec", "full", "sh", "-c", ": > /tmp/start")
        read_until_eof(reader, until=b"waiting\n")
        assert log.stat().st_size < 1 << 20 and os.statvfs(mib_tmpfs).f_bavail == 0  # full
        filler.unlink()
        podman.ok("exec", "full", "sh", "-c", ": > /tmp/go")
        assert podman.ok("wait", "full") == b"0\n"
    finally:
        reader.close()
    records = parse_log(log.read_bytes())  # every record whole
    r = podman("logs", "full")
    assert (r.returncode, r.stderr) == (0, b"")
    lines = r.stdout.split(b"\n")[:-1]
    assert lines == [content for _, _, content in records]
    expected = ([b"before%d" % i for i in range(before)] + [b"waiting"]
                + [b"after%d" % i for i in range(after)])
    it = iter(expected)
    assert all(any(line == e for e in it) for line in lines), "a line glued, cut or reordered"
    assert lines[-after:] == expected[-after:]
    assert len(lines) < len(expected)  # the disk was full: some were dropped
