"""A warm monitor's memory is offered to KSM; what it execs (the runtime, the container)
is not: the mark is per mapping, and exec replaces the mappings."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from pymon.server.snapshot import NAME
from tests.conftest import RUNC, Bundles, Launcher
from tests.integration.test_lifecycle import runc_start

pytestmark = pytest.mark.timeout(60)


def mergeable(pid: int) -> dict[str, bool]:
    """For each named mapping of `pid`: whether any of its VMAs is VM_MERGEABLE ("mg")."""
    out: dict[str, bool] = {}
    name = ""
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        first = line.split(maxsplit=1)[0]
        if "-" in first and not first.endswith(":"):
            parts = line.split(maxsplit=5)
            name = parts[5].strip() if len(parts) == 6 else "[anon]"
            out.setdefault(name, False)
        elif first == "VmFlags:":
            out[name] = out[name] or " mg" in line
    return out


@pytest.mark.skipif(not Path("/sys/kernel/mm/ksm").exists(), reason="kernel without KSM")
@pytest.mark.parametrize("mode", ["warm"])  # the session's server; cold has nothing to mark
def test_monitor_memory_is_mergeable_and_the_containers_is_not(bundles: Bundles,
                                                               launcher: Launcher) -> None:
    session, paths = launcher.create_ok(bundles.make(["sleep", "100"]))
    runc_start(paths.cid)
    try:
        monitor = mergeable(session.monitor_pid)
        # the snapshot's mappings (heap, arenas, data: pymon/server/snapshot.py)
        assert monitor[f"/memfd:{NAME} (deleted)"], monitor
        container = mergeable(int(paths.pidfile.read_text()))
        assert not any(container.values()), container
    finally:
        subprocess.run([RUNC, "kill", paths.cid, "KILL"], check=True, timeout=20)
        session.wait_monitor()
    assert json.loads(paths.exit_file.read_text()) == 137
