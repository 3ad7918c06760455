"""How R is started (pymon/runtime.py, pymon_spawn in pymon/_native): what it is given
between fork and exec, and a runtime that cannot be executed at all. Cold and warm."""

from __future__ import annotations

import json
import os
import select
import signal
from pathlib import Path

import pytest

from tests.conftest import Launcher
from tests.fakes.engine import wait_for
from tests.fakes.runtime import fake_runtime, runtime_pid
from tests.integration.test_stray_signals import STRAY_BITS, sig_masks

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("content, reason", [
    ("#!/nonexistent/interpreter\n", "No such file or directory"),
    ("\x7fnot an executable format\n", "Exec format error"),
])
def test_a_runtime_that_cannot_be_executed_reaches_the_engine(launcher: Launcher, tmp_path: Path,
                                                              content: str, reason: str) -> None:
    """P0 checks that the runtime is an executable file; exec may still fail in R."""
    runtime = tmp_path / "runtime"
    runtime.write_text(content)
    runtime.chmod(0o755)
    session, paths = launcher.create(tmp_path, runtime=str(runtime))
    assert session.wait_p0() == 0, session.p0_stderr
    msg = json.loads(session.read_sync())
    assert msg == {"data": -1,
                   "message": f"pymon: failed to execute runtime {runtime}: {reason}\n"}
    session.wait_monitor()
    assert not paths.exit_file.exists()


def test_the_runtime_gets_its_own_listen_pid_and_open_stdio(launcher: Launcher,
                                                            tmp_path: Path) -> None:
    """--replace-listen-pid: LISTEN_PID names R itself (§3.2); R's output pipes are 0777 (a
    non-root container user may reopen /dev/stdout); default signals, nothing blocked."""
    rt = fake_runtime(tmp_path, "record")
    env = dict(os.environ, LISTEN_PID="4194303", LISTEN_FDS="1")
    session, _ = launcher.create(tmp_path, "--replace-listen-pid", runtime=str(rt), env=env)
    assert session.wait_p0() == 0, session.p0_stderr
    assert json.loads(session.read_sync()) == {"data": -1, "message": "recorded\n"}
    session.wait_monitor()
    seen = json.loads(Path(f"{rt}.seen").read_text())
    assert seen["listen_pid"] == str(seen["pid"])
    assert seen["modes"] == [0o777, 0o777]
    ignored, blocked = sig_masks(seen["status"])
    # (Python itself ignores SIGXFSZ at start-up, in the fake runtime too)
    assert (ignored & STRAY_BITS & ~(1 << (signal.SIGXFSZ - 1)), blocked) == (0, 0)


def test_the_runtime_dies_with_its_monitor(launcher: Launcher, tmp_path: Path) -> None:
    """PDEATHSIG: a runtime left without its monitor would create a container nobody
    reaps or reports."""
    rt = fake_runtime(tmp_path, "hang")
    session, _ = launcher.create(tmp_path, runtime=str(rt))
    assert session.wait_p0() == 0, session.p0_stderr
    pid_file = Path(f"{rt}.pid")
    wait_for(lambda: pid_file.exists() and pid_file.read_text() != "", what="the runtime running")
    pidfd = os.pidfd_open(runtime_pid(rt))
    try:
        os.kill(session.monitor_pid, signal.SIGKILL)
        assert select.select([pidfd], [], [], 30)[0], "the runtime outlived its monitor"
    finally:
        os.close(pidfd)


def test_the_monitor_yields_its_cpu_once_the_pid_is_sent(tmp_path: Path) -> None:
    """Right after the pid message M calls sched_yield: the message wakes the engine on
    M's CPU, and M's next milliseconds of set-up would otherwise run first. The delay
    itself is a matter of timing (bench/startup.py shows it); the call is what can be
    seen. Cold only: a cold and a warm monitor run the same monitor_process, and strace
    would have to follow the whole warm server."""
    launcher = Launcher(tmp_path)
    trace = tmp_path / "strace.out"
    rt = fake_runtime(tmp_path, "ok-exit-5")
    try:
        session, _ = launcher.create(
            tmp_path, runtime=str(rt), log="none",
            wrapper=["strace", "-f", "-qq", "-s", "64", "-o", str(trace),
                     "-e", "trace=write,sched_yield", "-e", "signal=none"])
        assert session.wait_p0() == 0, session.p0_stderr
        pid = json.loads(session.read_sync())["data"]
        assert pid > 0
        session.wait_monitor()
    finally:
        launcher.cleanup()
    calls = [line.split(None, 1) for line in trace.read_text().splitlines()]
    sent = [i for i, (_, call) in enumerate(calls)
            if call.startswith("write(") and f'{{\\"data\\": {pid}}}' in call]
    assert len(sent) == 1, trace.read_text()
    writer = calls[sent[0]][0]
    after = [call for who, call in calls[sent[0] + 1:] if who == writer]
    assert after and after[0].startswith("sched_yield()"), after[:3]
