"""ExecSync monitors run directly, exactly as CRI-O 1.26 runs them (tests/fakes/execsync),
against a container of the rig: bad input CRI-O could pass, and the -T bound.

CRI-O reads only the sync pipe (after the monitor exits); the monitor's stderr is not
shown. So every failure must put a message there, exit non-zero, and leave nothing
running.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.crio.conftest import Pod, Rig
from tests.fakes import execsync
from tests.fakes.bundle import RUNC

pytestmark = pytest.mark.timeout(60)


class Target:
    """A running container of the rig, and what an ExecSync into it needs."""

    def __init__(self, rig: Rig, ctr: str) -> None:
        self.rig, self.ctr = rig, ctr
        self.runtime_root = str(rig.state / "runc-root")
        self.socket_dir = str(rig.state / "runroot" / "attach")

    def argv(self, files: execsync.Files, timeout: int | None = None, name: str = "") -> list[str]:
        return execsync.execsync_argv(self.ctr, name or "k8s_app_" + uuid.uuid4().hex[:8],
                                      RUNC, self.runtime_root, str(files.pidfile),
                                      str(files.log), str(files.spec), self.socket_dir,
                                      timeout)


@pytest.fixture
def target(rig: Rig, pod: Pod) -> Target:
    return Target(rig, pod.create("app", ["sh", "-c", "exec sleep 1000"]))


@pytest.fixture
def files() -> Iterator[execsync.Files]:
    f = execsync.Files(["sh", "-c", "echo out; echo err >&2"])
    yield f
    f.cleanup()


def in_pid_namespace(ns: str) -> list[int]:
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.readlink(f"/proc/{name}/ns/pid") == ns:
                    out.append(int(name))
            except OSError:
                pass
    return out


def comm(pid: int) -> str:
    return Path(f"/proc/{pid}/comm").read_text().strip()


def assert_failed_cleanly(rig: Rig, res: execsync.Result, message: str, name: str) -> None:
    """Non-zero exit, {"exit_code": -1, "message": ...} on the sync pipe, no monitor left
    (a warm one included: the server's children are looked up by their launch's argv)."""
    assert res.returncode != 0, res
    msg = res.message
    assert msg.get("exit_code") == -1 and message in msg.get("message", ""), res
    assert rig.monitor.left(name) == set()


def test_execsync_as_crio_runs_it(rig: Rig, target: Target, files: execsync.Files) -> None:
    res = execsync.run([str(rig.monitor.path)], target.argv(files))
    assert (res.returncode, res.message) == (0, {"exit_code": 0}), res
    assert [(s, c) for s, _, c in _records(res.log)] == [(b"stdout", b"out"), (b"stderr", b"err")]


def _records(log: bytes) -> list[tuple[bytes, bytes, bytes]]:
    out = []
    for line in log.split(b"\n")[:-1]:
        _, stream, flag, content = line.split(b" ", 3)
        out.append((stream, flag, content))
    return out


def test_log_dir_removed(rig: Rig, target: Target, tmp_path: Path) -> None:
    """CRI-O's -l points into a directory that is gone (removed under it)."""
    gone = tmp_path / "gone"
    gone.mkdir()
    files = execsync.Files(["true"])
    name = "k8s_logdir_" + uuid.uuid4().hex[:8]
    argv = target.argv(files, name=name)
    argv[argv.index("-l") + 1] = str(gone / "crio-log")
    gone.rmdir()
    res = execsync.run([str(rig.monitor.path)], argv)
    files.cleanup()
    assert_failed_cleanly(rig, res, "Failed to open log file No such file or directory", name)


@pytest.mark.parametrize("value", [0, -5])
def test_timeout_not_positive(rig: Rig, target: Target, files: execsync.Files, value: int) -> None:
    name = "k8s_t_" + uuid.uuid4().hex[:8]
    res = execsync.run([str(rig.monitor.path)], target.argv(files, timeout=value, name=name))
    assert_failed_cleanly(rig, res, f"Timeout must be a positive number of seconds, got {value}",
                          name)
    assert not files.pidfile.exists()  # the runtime never ran


def test_spec_missing(rig: Rig, target: Target, files: execsync.Files) -> None:
    files.spec.unlink()
    name = "k8s_nospec_" + uuid.uuid4().hex[:8]
    res = execsync.run([str(rig.monitor.path)], target.argv(files, name=name))
    assert_failed_cleanly(rig, res, f"Exec process spec {files.spec}: No such file or directory",
                          name)


def test_spec_malformed(rig: Rig, target: Target, files: execsync.Files) -> None:
    """The JSON is checked by runc; its error reaches the sync pipe."""
    files.spec.write_text('{"args": ["true"')
    name = "k8s_badspec_" + uuid.uuid4().hex[:8]
    res = execsync.run([str(rig.monitor.path)], target.argv(files, name=name))
    assert_failed_cleanly(rig, res, f"Exec process spec {files.spec} is not valid: ", name)
    assert "exec failed" in res.message["message"], res  # runc's own words follow


def test_timeout_reaps_before_reporting(rig: Rig, target: Target) -> None:
    """When the timeout is reported, the exec'd process and its children are not only
    killed but reaped: their pids no longer exist (pymon is the exec's subreaper; the
    children are reaped by the pod's pause)."""
    files = execsync.Files(["sh", "-c", "sleep 201 & setsid sleep 202 & exec sleep 203"])
    try:
        res = execsync.run([str(rig.monitor.path)], target.argv(files, timeout=1))
        assert res.message == {"exit_code": -1, "message": "command timed out"}, res
        assert 1 <= res.wall < 1 + 2 + 1, res.wall  # -T, proctree.REAP_DEADLINE, start-up
        exec_pid = int(files.pidfile.read_text())
        assert not os.path.exists(f"/proc/{exec_pid}")
        # nothing else in the pod's pid namespace but pause and the app (zombies have
        # no cmdline, so look at every process of the namespace)
        init = int(rig.inspect(target.ctr, "{{.info.pid}}"))
        ns = os.readlink(f"/proc/{init}/ns/pid")
        assert sorted(comm(p) for p in in_pid_namespace(ns)) == ["pause", "sleep"]
    finally:
        files.cleanup()


def test_execsync_monitor_does_without_trio(rig: Rig, target: Target, files: execsync.Files,
                                            tmp_path: Path) -> None:
    """The foreground ExecSync monitor (pymon.monitor.probe) never imports trio: that import
    is most of a cold exec probe's cost (bench/execsync.py). (The monitor's stderr is
    /dev/null by then, so the modules are written to a file when it returns.) The cold
    path, run here directly: one run per session is enough."""
    from tests.crio.conftest import REPO, VENV_PYTHON

    if rig.monitor.mode != "cold":
        pytest.skip("a cold-path check, run in the cold session")

    out = tmp_path / "modules"
    code = ("import sys; from pymon.launcher.main import main; rc = main(warm=False); "
            f"open({str(out)!r}, 'w').write(' '.join(sorted(sys.modules))); sys.exit(rc)")
    res = execsync.run([str(VENV_PYTHON), "-c", code], target.argv(files),
                       env={"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO)})
    assert res.message == {"exit_code": 0}, res
    modules = out.read_text().split()
    assert "pymon.monitor.probe" in modules and "trio" not in modules
