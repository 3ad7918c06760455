"""pymon + real runc on a busybox bundle, launched the way podman launches conmon."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import RUNC, Bundles, Launcher
from tests.fakes.attach_client import connect, read_until_eof

pytestmark = pytest.mark.timeout(60)

RECORD = re.compile(rb"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}[+-]\d\d:\d\d) (stdout|stderr) ([FP]) (.*)$",
                    re.DOTALL)


def parse_log(data: bytes) -> list[tuple[bytes, bytes, bytes]]:
    out = []
    for line in data.split(b"\n")[:-1]:
        m = RECORD.match(line)
        assert m, f"malformed record {line!r}"
        out.append((m.group(2), m.group(3), m.group(4)))
    assert data.endswith(b"\n")
    return out


def runc_start(cid: str) -> None:
    subprocess.run([RUNC, "start", cid], check=True, timeout=20)


def test_echo_exit_7(bundles: Bundles, launcher: Launcher) -> None:
    bundle = bundles.make(["sh", "-c", "echo out; echo err >&2; exit 7"])
    session, paths = launcher.create(bundle)
    assert session.wait_p0() == 0, session.p0_stderr
    monitor = session.monitor_pid
    assert paths.conmon_pidfile.read_text() == str(monitor)  # no newline
    assert stat.S_IMODE(paths.conmon_pidfile.stat().st_mode) == 0o644

    msg = session.read_sync()
    pid = int(paths.pidfile.read_text())
    assert msg == b'{"data": %d}\n' % pid
    # created, not yet started: the pid is M's child now, not running user code
    assert not paths.exit_file.exists()
    runc_start(paths.cid)
    session.wait_monitor()
    assert session.read_sync() == b""  # EOF after the monitor exits
    assert paths.exit_file.read_bytes() == b"7"
    assert parse_log(paths.log.read_bytes()) == [(b"stdout", b"F", b"out"), (b"stderr", b"F", b"err")]
    assert stat.S_IMODE(paths.log.stat().st_mode) == 0o640


def test_exit_command_runs_after_exit_file(bundles: Bundles, launcher: Launcher,
                                           tmp_path: Path) -> None:
    bundle = bundles.make(["sh", "-c", "exit 3"])
    probe = tmp_path / "saw"
    script = tmp_path / "exit-cmd.sh"
    # $1 is the exit dir; the command copies the exit file it finds and its argv
    script.write_text(f'#!/bin/sh\n{{ cat "$1"/*; printf " [%s]" "$@"; }} > {probe}.tmp\nmv {probe}.tmp {probe}\n')
    script.chmod(0o755)
    session, paths = launcher.create(bundle, exit_command=[str(script), str(bundle / "exits"), "",
                                                             "--root", "x y"])
    assert session.wait_p0() == 0
    assert json.loads(session.read_sync())["data"] > 0
    runc_start(paths.cid)
    session.wait_monitor()
    assert probe.read_text() == f"3 [{bundle / 'exits'}] [] [--root] [x y]"


def test_signal_death_gives_128_plus_n(bundles: Bundles, launcher: Launcher) -> None:
    bundle = bundles.make(["sleep", "100"])
    session, paths = launcher.create(bundle)
    assert session.wait_p0() == 0
    assert json.loads(session.read_sync())["data"] > 0
    runc_start(paths.cid)
    subprocess.run([RUNC, "kill", paths.cid, "KILL"], check=True, timeout=20)
    session.wait_monitor()
    assert paths.exit_file.read_bytes() == b"137"


def test_container_killed_before_start_gives_137(bundles: Bundles, launcher: Launcher) -> None:
    bundle = bundles.make(["sh", "-c", "echo never"])
    session, paths = launcher.create(bundle)
    assert session.wait_p0() == 0
    assert json.loads(session.read_sync())["data"] > 0
    subprocess.run([RUNC, "delete", "--force", paths.cid], check=True, timeout=20)
    session.wait_monitor()
    assert paths.exit_file.read_bytes() == b"137"
    assert paths.log.read_bytes() == b""


def test_monitor_forwards_sigterm(bundles: Bundles, launcher: Launcher) -> None:
    bundle = bundles.make(["sh", "-c", ("trap 'echo got-term; exit 7' TERM; echo up; "
                                        "while true; do sleep 0.05; done")])
    session, paths = launcher.create_ok(bundle)
    sock = connect(bundle / "attach")
    runc_start(paths.cid)
    read_until_eof(sock, until=b"up\n")  # the trap is installed: the container said "up"
    os.kill(session.monitor_pid, 15)
    session.wait_monitor()
    assert paths.exit_file.read_bytes() == b"7"
    assert [r[2] for r in parse_log(paths.log.read_bytes())] == [b"up", b"got-term"]


def test_partial_lines_and_binary_bytes(bundles: Bundles, launcher: Launcher) -> None:
    bundle = bundles.make(["printf", r"a\000b\377c\r\nno-newline"])
    session, paths = launcher.create(bundle)
    assert session.wait_p0() == 0
    assert json.loads(session.read_sync())["data"] > 0
    runc_start(paths.cid)
    session.wait_monitor()
    assert paths.exit_file.read_bytes() == b"0"
    assert parse_log(paths.log.read_bytes()) == [(b"stdout", b"F", b"a\x00b\xffc\r"),
                                                 (b"stdout", b"P", b"no-newline")]


def test_runtime_sees_only_its_fds(bundles: Bundles, launcher: Launcher, tmp_path: Path) -> None:
    """Checklist 26: no monitor-internal fd (log, fifos, sync/start) leaks into the runtime."""
    bundle = bundles.make(["true"])
    report = tmp_path / "fds"
    wrapper = tmp_path / "runtime.sh"
    # fstat probing opens nothing itself, unlike listing /proc/self/fd
    wrapper.write_text(
        f"#!{sys.executable} -I\nimport os, sys\n"
        "def is_open(fd):\n    try:\n        os.fstat(fd)\n        return True\n"
        "    except OSError:\n        return False\n"
        "fds = ' '.join(str(fd) for fd in range(1024) if is_open(fd))\n"
        f"open({str(report)!r}, 'w').write(fds)\n"
        f"os.execv({RUNC!r}, [{RUNC!r}] + sys.argv[1:])\n")
    wrapper.chmod(0o755)
    session, paths = launcher.create(bundle, runtime=str(wrapper))
    assert session.wait_p0() == 0
    assert json.loads(session.read_sync())["data"] > 0
    assert sorted(report.read_text().split()) == ["0", "1", "2"]
    runc_start(paths.cid)
    session.wait_monitor()
    assert paths.exit_file.read_bytes() == b"0"
