"""A warm monitor runs on the server's snapshot (pymon/server/snapshot.py): its memory is
the snapshot file mapped privately, and what it copies it can give back. --no-snapshot
leaves the server's memory anonymous."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pymon._native import give_back_signal
from pymon.server.snapshot import NAME
from tests.conftest import RUNC, Bundles, Launcher
from tests.fakes.engine import wait_for
from tests.fakes.server import WarmServer
from tests.integration.test_lifecycle import runc_start

pytestmark = pytest.mark.timeout(90)

SNAPSHOT = f"/memfd:{NAME} (deleted)"


def mapped(pid: int) -> dict[str, int]:
    """KiB of `pid`'s mappings per name."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        parts = line.split(maxsplit=5)
        start, end = (int(x, 16) for x in parts[0].split("-"))
        name = parts[5].strip() if len(parts) == 6 else "[anon]"
        out[name] = out.get(name, 0) + (end - start) // 1024
    return out


def timer_signals(pid: int) -> list[int]:
    """The signals of `pid`'s POSIX timers."""
    return [int(line.split()[1].split("/")[0])
            for line in Path(f"/proc/{pid}/timers").read_text().splitlines()
            if line.startswith("signal:")]


def run_one(bundles: Bundles, launcher: Launcher) -> tuple[dict[str, int], list[int]]:
    session, paths = launcher.create_ok(bundles.make(["sh", "-c", "echo up; exec sleep 100"]))
    runc_start(paths.cid)
    try:
        # its output relayed: the monitor's life has begun, and its timer with it
        wait_for(lambda: paths.log.exists() and b"up" in paths.log.read_bytes(),
                 what="the container's output in the log")
        maps = mapped(session.monitor_pid)
        timers = timer_signals(session.monitor_pid)
    finally:
        subprocess.run([RUNC, "kill", paths.cid, "KILL"], check=True, timeout=20)
        session.wait_monitor()
    assert json.loads(paths.exit_file.read_text()) == 137
    return maps, timers


@pytest.mark.parametrize("mode", ["warm"])  # the session's server
def test_a_warm_monitor_runs_on_the_servers_snapshot(bundles: Bundles,
                                                      launcher: Launcher) -> None:
    maps, timers = run_one(bundles, launcher)
    # the heap, the arenas and the interpreter's data: megabytes of them
    assert maps.get(SNAPSHOT, 0) > 8 * 1024, maps
    # and the timer whose signal gives back what the monitor copied
    assert timers == [give_back_signal()], timers


def test_no_snapshot_leaves_the_memory_anonymous(bundles: Bundles, tmp_path: Path) -> None:
    server = WarmServer(tmp_path / "srv" / "server.sock",
                        cmd=[sys.executable, "-m", "pymon.server", "--no-snapshot"])
    launcher = Launcher(tmp_path, server)
    try:
        maps, timers = run_one(bundles, launcher)
        assert SNAPSHOT not in maps and "[heap]" in maps, maps
        assert timers == [], timers
        assert b"memory snapshot" not in server.log
    finally:
        launcher.cleanup()
        server.stop()
