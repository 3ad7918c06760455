"""A warm monitor runs on the server's snapshot (pymon/server/snapshot.py): its memory is
the snapshot file mapped privately, and what it copies it can give back. --no-snapshot
leaves the server's memory anonymous."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pymon.server.snapshot import NAME
from tests.conftest import RUNC, Bundles, Launcher
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


def run_one(bundles: Bundles, launcher: Launcher) -> dict[str, int]:
    session, paths = launcher.create_ok(bundles.make(["sleep", "100"]))
    runc_start(paths.cid)
    try:
        maps = mapped(session.monitor_pid)
    finally:
        subprocess.run([RUNC, "kill", paths.cid, "KILL"], check=True, timeout=20)
        session.wait_monitor()
    assert json.loads(paths.exit_file.read_text()) == 137
    return maps


@pytest.mark.parametrize("mode", ["warm"])  # the session's server
def test_a_warm_monitor_runs_on_the_servers_snapshot(bundles: Bundles,
                                                      launcher: Launcher) -> None:
    maps = run_one(bundles, launcher)
    # the heap, the arenas and the interpreter's data: megabytes of them
    assert maps.get(SNAPSHOT, 0) > 8 * 1024, maps


def test_no_snapshot_leaves_the_memory_anonymous(bundles: Bundles, tmp_path: Path) -> None:
    server = WarmServer(tmp_path / "srv" / "server.sock",
                        cmd=[sys.executable, "-m", "pymon.server", "--no-snapshot"])
    launcher = Launcher(tmp_path, server)
    try:
        maps = run_one(bundles, launcher)
        assert SNAPSHOT not in maps and "[heap]" in maps, maps
        assert b"memory snapshot" not in server.log
    finally:
        launcher.cleanup()
        server.stop()
