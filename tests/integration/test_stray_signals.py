"""Stray signals (SIGHUP, SIGUSR1, SIGUSR2, SIGALRM, ...) never end the monitor, before or
under trio; SIGUSR1 answers with a state report in the diagnostics; the runtime, the
container and the exit command still get default dispositions and an empty mask."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from pymon.signals import STRAY
from tests.conftest import Bundles, Launcher
from tests.fakes.attach_client import connect, read_until_eof
from tests.fakes.engine import blocked_reading, wait_for
from tests.fakes.runtime import fake_runtime, runtime_pid
from tests.fakes.syslog import PrivateSyslog
from tests.integration.test_lifecycle import runc_start

pytestmark = pytest.mark.timeout(60)
STRAY_BITS = sum(1 << (sig - 1) for sig in STRAY)


@pytest.fixture
def syslog(tmp_path: Path) -> Iterator[PrivateSyslog]:
    s = PrivateSyslog(tmp_path / "syslog")
    yield s
    s.close()


def sig_masks(status: str) -> tuple[int, int]:
    """(SigIgn, SigBlk) from a /proc/PID/status text."""
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return int(fields["SigIgn"], 16), int(fields["SigBlk"], 16)


def test_stray_signals_under_trio_and_the_usr1_report(bundles: Bundles, launcher: Launcher,
                                                      syslog: PrivateSyslog,
                                                      tmp_path: Path) -> None:
    exit_status = tmp_path / "exit-command-status"
    bundle = bundles.make(["sh", "-c", ('cat /proc/self/status; echo up; while read x; do '
                                        '[ "$x" = quit ] && exit 3; echo "got $x"; done')])
    session, paths = launcher.create_ok(
        bundle, "-i", "--syslog", wrapper=syslog.wrapper,
        exit_command=["/bin/sh", "-c", (f"cat /proc/self/status > {exit_status}.tmp; "
                                        f"mv {exit_status}.tmp {exit_status}")])
    sock = connect(bundle / "attach")
    runc_start(paths.cid)
    got = read_until_eof(sock, until=b"up\n")
    # the container (through runc) got no ignored stray signal and an empty mask
    ignored, blocked = sig_masks(got.data["stdout"].decode())
    status_size = len(got.data["stdout"])
    assert (ignored & STRAY_BITS, blocked) == (0, 0)

    monitor = session.monitor_pid
    for sig in STRAY:
        os.kill(monitor, sig)
    sock.send(b"ping\n")  # a round trip through the monitor: it is alive and serving
    assert read_until_eof(sock, until=b"got ping\n").data["stdout"].endswith(b"got ping\n")
    report = syslog.wait_for(r"state: container pid (\d+) running; relayed stdout (\d+) bytes, "
                             r"stderr (\d+) bytes; (\d+) attach clients \(0 dropped as stalled\); "
                             r"log file (\d+) bytes; 0 log lines \(0 bytes\) dropped")
    assert int(report[1]) == int(paths.pidfile.read_text())
    assert int(report[2]) in (status_size, status_size + len(b"got ping\n"))  # before/after
    assert (int(report[3]), int(report[4])) == (0, 1)

    os.kill(monitor, signal.SIGUSR1)  # each request gets its own report, with new counts
    relayed = status_size + len(b"got ping\n")
    report = syslog.wait_for(rf"relayed stdout {relayed} bytes.* log file (\d+) bytes")
    assert int(report[1]) == paths.log.stat().st_size
    sock.send(b"quit\n")
    assert read_until_eof(sock).eof
    session.wait_monitor()
    assert paths.exit_file.read_text() == "3"
    wait_for(exit_status.exists, what="the exit command's report")
    ignored, blocked = sig_masks(exit_status.read_text())
    assert (ignored & STRAY_BITS, blocked) == (0, 0)


def test_stray_signals_before_trio(launcher: Launcher, tmp_path: Path) -> None:
    """P0 waiting for the start byte, then M waiting for a runtime that hangs: neither is
    ended by a stray signal, and the runtime was not given them ignored."""
    rt = fake_runtime(tmp_path, "hang")
    session, _ = launcher.create(tmp_path, runtime=str(rt), send_start=False)
    p0 = session.p0.pid
    # cold: P0 blocks in read(2) on the start pipe; warm: the launcher in poll(2), waiting
    # for its monitor (which reads the start pipe) to say it took over
    def blocked() -> bool:
        if launcher.mode == "cold":
            return blocked_reading(p0, session.start_fd)
        return Path(f"/proc/{p0}/syscall").read_text().split()[0] in ("7", "271")

    wait_for(blocked, what="P0 blocked waiting for the start byte")
    for sig in STRAY:
        os.kill(p0, sig)
    session.send_start()
    assert session.wait_p0() == 0, session.p0_stderr

    runtime_pid_file = Path(str(rt) + ".pid")
    # the file is created, then written: wait for its content, not its existence
    wait_for(lambda: runtime_pid_file.exists() and runtime_pid_file.read_text() != "",
             what="the runtime running")
    ignored, blocked = sig_masks(Path(f"/proc/{runtime_pid(rt)}/status").read_text())
    # (Python itself ignores SIGXFSZ at start-up, in the fake runtime too)
    assert (ignored & STRAY_BITS & ~(1 << (signal.SIGXFSZ - 1)), blocked) == (0, 0)
    monitor = session.monitor_pid
    for sig in STRAY:
        os.kill(monitor, sig)
    # SIGTERM is still forwarded to the runtime, which dies of it: M, alive, reports that
    os.kill(monitor, signal.SIGTERM)
    assert json.loads(session.read_sync()) == {"data": -1}
    session.wait_monitor()
