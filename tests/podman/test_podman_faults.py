"""Operator faults against real podman with pymon as its conmon: stray signals sent to the
monitor must not lose the container's exit (conmon dies of SIGHUP, SIGUSR2, SIGALRM)."""

from __future__ import annotations

import os
import signal

import pytest

from pymon.signals import STRAY
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
