"""Real CRI-O 1.26.4 with pymon as its monitor, driven through crictl like a kubelet.

The rig (`../shared/tools/crio-rig`, or $PYMON_CRIO_RIG) runs CRI-O offline in a private
state dir (CRIO_RIG_DIR: one per session, deleted at the end), installs what it needs
from apt on first use, and records every monitor invocation (--trace-conmon).

The monitor is a session fixture parameter (MODES, default cold and warm). CRI-O runs the
path given to the rig; the rig writes the runtime handler's monitor_env itself (PATH only)
and a crio.conf.d drop-in for [crio.runtime.runtimes.runc] would replace the whole handler,
so each mode's path is an env wrapper (`write_env_wrapper`: sets the variables, then execs
the entry point `python -m pymon.entrypoint DEST`, keeping the pid, argv and fds):
  cold          PYMON_SOCKET empty: the launcher never asks a server
  warm          PYMON_SOCKET of a pymon-server this fixture starts (tests/fakes/server.py)
                and stops at the end of the session; the budget is raised as in the
                integration tests, and every launch must have been served warm
  cold-wrapper  (opt-in) PYMON_SOCKET where no server listens: the fall-back path
Warm monitors are the server's children, whose cmdline is the server's: `pids` finds them
through the server's log ("forked monitor M for launcher L") and the wrapper's record of
each launcher's pid and argv.

Every test gets a fresh pod (`pod` fixture) that is stopped and removed afterwards; then
no monitor of this rig may be left running. At the end of the session the rig is
stopped and its state dir removed.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fakes.engine import monitors_of, ppid, wait_pid_gone
from tests.fakes.server import WarmServer

REPO = Path(__file__).resolve().parents[2]
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
RIG = Path(os.environ.get("PYMON_CRIO_RIG", REPO.parent / "shared" / "tools" / "crio-rig"))
IMAGE = "localhost/bb:latest"  # the rig's only image: busybox-static, /pause, pgrep
# The monitor modes the session runs in (PYMON_CRIO_MODES=a,b to choose; see above)
MODES = os.environ.get("PYMON_CRIO_MODES", "cold,warm").split(",")


def rig_skip_reason() -> str | None:
    """Why the rig cannot run here (it needs root); None when it can."""
    if os.geteuid() != 0:
        return "CRI-O (crio-rig) needs root"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "crio" in item.nodeid.split("/"):
            item.add_marker(pytest.mark.crio)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "crio: real CRI-O 1.26.4 through crio-rig (needs root)")


class ServerLog:
    """The warm server's stderr (WarmServer reads it as it comes), so that a monitor's
    launcher can be looked up: `--verbose` logs "forked monitor M for launcher L" for
    every fork."""

    FORKED = re.compile(rb"forked monitor (\d+) for launcher (\d+)")

    def __init__(self, server: WarmServer) -> None:
        self.server = server

    @property
    def text(self) -> bytes:
        return self.server.log

    def forks(self) -> dict[int, int]:
        """monitor pid -> launcher pid, for every fork logged so far."""
        return {int(m): int(launcher) for m, launcher in self.FORKED.findall(self.text)}

    def launcher_of(self, monitor: int, timeout: float = 5) -> int | None:
        """The launcher a monitor was forked for; the line follows the fork at once."""
        try:
            self.server.wait_for(f"forked monitor {monitor} for launcher ".encode(), timeout)
        except (TimeoutError, RuntimeError):
            pass
        return self.forks().get(monitor)

    def stop(self) -> int | None:
        """SIGTERM the server, and reap it once it has said its last words."""
        return self.server.stop()


class MonitorUnderTest:
    """What the rig runs as conmon, and how to find the monitors it started."""

    def __init__(self, mode: str, path: Path, entry: Path, launches: Path,
                 server: ServerLog | None = None) -> None:
        self.mode = mode
        self.path = path  # given to `crio-rig start --conmon`
        self.entry = entry  # pymon's entry point, exec'd by the wrapper at `path`
        self.launches = launches  # the wrapper's record: "PID ARGV..." per launch
        self.server = server  # warm mode

    def launcher_argvs(self) -> dict[int, str]:
        return read_launches(self.launches)

    def pids(self, needle: str = "") -> set[int]:
        """Running monitors, optionally only those whose argv holds `needle` (a container
        id, "-c ID"): processes whose cmdline names the entry point (cold monitors, and
        launchers), and in warm mode the server's children, by their launcher's argv.
        A child of a monitor is not one: until it execs it shows the monitor's argv (the
        runtime, the exit command, and in a cold monitor the `ldconfig -p` that trio's
        import runs through ctypes.util.find_library)."""
        out = set()
        for name in os.listdir("/proc"):
            if not name.isdigit() or int(name) == os.getpid():
                continue
            try:
                argv = Path(f"/proc/{name}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            # a cold monitor is the interpreter the C launcher exec'd; its -c program
            # ends with "# ENTRY" (pymon.launcher.program.bootstrap)
            joined = b" ".join(argv)
            if str(self.entry).encode() in joined and needle.encode() in joined:
                out.add(int(name))
        if self.server is not None:
            argvs = None
            for child in monitors_of(self.server.server.pid):
                launcher = self.server.launcher_of(child)
                if launcher is None:  # not a monitor we know of: count it, to be safe
                    out.add(child)
                    continue
                argvs = argvs if argvs is not None and launcher in argvs else self.launcher_argvs()
                if needle in argvs.get(launcher, needle):
                    out.add(child)
        return {pid for pid in out if ppid(pid) not in out}


    def left(self, needle: str, timeout: float = 5) -> set[int]:
        """The monitors matching `needle` still running after up to `timeout` seconds: a
        warm ExecSync monitor exits just after its launcher got the status."""
        deadline = time.monotonic() + timeout
        pids = self.pids(needle)
        while pids and time.monotonic() < deadline:
            for pid in pids:
                try:
                    wait_pid_gone(pid, max(0.0, deadline - time.monotonic()))
                except TimeoutError:
                    pass
            pids = self.pids(needle)
        return pids


def read_launches(path: Path) -> dict[int, str]:
    """launcher pid -> its argv (space-joined), as the wrapper recorded them (the last
    launch wins if a pid was reused)."""
    out = {}
    for line in path.read_text(errors="replace").splitlines():
        pid, _, argv = line.partition(" ")
        out[int(pid)] = argv
    return out


@pytest.fixture(scope="session", params=MODES)
def monitor(request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[MonitorUnderTest]:
    reason = rig_skip_reason()
    if reason:
        pytest.skip(reason)
    mode = request.param
    base = tmp_path_factory.mktemp(f"monitor-{mode}")
    entry = base / "pymon"
    subprocess.run([str(VENV_PYTHON), "-m", "pymon.entrypoint", str(entry)], check=True,
                   cwd=REPO, timeout=120)
    launches = base / "launches"
    launches.touch()
    if mode == "cold":
        yield MonitorUnderTest(mode, write_env_wrapper(base / "pymon-cold", entry, {
            "PYMON_SOCKET": ""}, launches), entry, launches)
    elif mode == "cold-wrapper":
        yield MonitorUnderTest(mode, write_env_wrapper(base / "pymon-wrapped", entry, {
            "PYMON_SOCKET": str(base / "no-server.sock")}, launches), entry, launches)
    elif mode == "warm":
        server = WarmServer(base / "server.sock", cmd=[str(VENV_PYTHON), "-m", "pymon.server"],
                            env=dict(os.environ, PYTHONPATH=str(REPO)))
        log = ServerLog(server)
        try:
            yield MonitorUnderTest(mode, write_env_wrapper(
                base / "pymon-warm", entry, server.env(), launches), entry, launches, log)
            # the rig is stopped by now: no monitor of the server may be left, and no
            # launch may have gone cold (the tests would have tested the cold path)
            left = monitors_of(server.pid)
            assert not left, f"warm monitors left after the rig stopped: {left}"
            launched = set(read_launches(launches))
            served = set(log.forks().values())
            assert launched and launched <= served, \
                f"launches not served warm: {sorted(launched - served)}; {log.text[-2000:]!r}"
        finally:
            code = log.stop()
            assert code == 0, log.text[-2000:]
    else:
        raise AssertionError(f"monitor mode {mode} has no set-up")


def write_env_wrapper(path: Path, target: Path, env: dict[str, str], launches: Path) -> Path:
    """A monitor path for CRI-O that runs `target` with `env` added, and appends "PID ARGV"
    to `launches` first. sh's exec keeps the pid CRI-O started, the argv and the
    inherited _OCI_* fds."""
    lines = ["#!/bin/sh", *(f"export {k}={shlex.quote(v)}" for k, v in env.items()),
             f"printf '%s %s\\n' \"$$\" \"$*\" >> {shlex.quote(str(launches))}",
             f'exec {shlex.quote(str(target))} "$@"']
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o755)
    return path


class Rig:
    """One CRI-O, its crictl, and what it recorded."""

    def __init__(self, state: Path, monitor: MonitorUnderTest) -> None:
        self.state = state
        self.monitor = monitor
        self.env = dict(os.environ, CRIO_RIG_DIR=str(state))
        self.crictl_bin = state / "bin" / "crictl"
        self.crictl_conf = state / "etc" / "crictl.yaml"
        self.invocations = state / "conmon-invocations.log"
        self.logs = state / "logs"

    def rig(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(RIG), *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def crictl_argv(self, *args: str) -> list[str]:
        return [str(self.crictl_bin), "--config", str(self.crictl_conf), *args]

    def crictl(self, *args: str, timeout: float = 60,
               input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.crictl_argv(*args), capture_output=True, text=True,
                              timeout=timeout, input=input,
                              stdin=None if input is not None else subprocess.DEVNULL)

    def ok(self, *args: str, timeout: float = 60) -> str:
        r = self.crictl(*args, timeout=timeout)
        assert r.returncode == 0, (args, r.stdout, r.stderr)
        return r.stdout.strip()

    def inspect(self, ctr: str, template: str) -> str:
        return self.ok("inspect", "-o", "go-template", "--template", template, ctr)

    def wait_state(self, ctr: str, want: str, timeout: float = 20) -> None:
        """Poll `crictl inspect` (CRI has no event for it) until state and exit code
        render to `want`, e.g. "CONTAINER_EXITED 7"."""
        deadline = time.monotonic() + timeout
        while (got := self.inspect(ctr, "{{.status.state}} {{.status.exitCode}}")) != want:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{ctr}: {got!r}, wanted {want!r}")
            time.sleep(0.05)

    def monitor_argvs(self, cid: str) -> list[list[str]]:
        """The argv of every monitor invocation for container `cid` (after the tracer's
        timestamp/env prefix)."""
        out = []
        for line in self.invocations.read_text().splitlines():
            argv = line.split("]: ", 1)[1].split(" ") if "]: " in line else []
            if "-c" in argv and argv[argv.index("-c") + 1] == cid:
                out.append(argv)
        return out


def _kill_lost_crio(state: Path) -> None:
    """`crio-rig start` checks its crio's pid right after launching it; under load that
    pid may not have exec'd crio yet, and the rig then reports "crio exited during
    startup" while the crio it launched comes up untracked. That crio is ours: stop it."""
    want = str(state / "bin" / "crio")
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{name}/exe") != want:
                continue
        except OSError:
            continue
        os.kill(int(name), 15)
        try:
            wait_pid_gone(int(name), 20)
        except TimeoutError:
            os.kill(int(name), 9)
            wait_pid_gone(int(name), 10)


@pytest.fixture(scope="session")
def rig(monitor: MonitorUnderTest) -> Iterator[Rig]:
    """CRI-O for the whole session (per monitor mode), stopped and deleted at the end."""
    if not RIG.exists():
        pytest.fail(f"crio-rig not found at {RIG} (set PYMON_CRIO_RIG)")
    # short and plain: the rig wants [A-Za-z0-9._/+@-], and CRI-O dials the attach socket
    # at STATE/runroot/attach/<64 hex>/attach, which must fit a sockaddr_un (108 bytes)
    state = Path(tempfile.mkdtemp(prefix="pcr-", dir="/tmp"))
    rig = Rig(state, monitor)
    try:
        for attempt in range(3):
            r = rig.rig("start", "--conmon", str(monitor.path), "--trace-conmon")
            if r.returncode == 0:
                break
            if "crio exited during startup" not in r.stderr or attempt == 2:
                pytest.fail(f"crio-rig start failed:\n{r.stderr[-3000:]}")
            _kill_lost_crio(state)
        yield rig
    finally:
        stop = rig.rig("stop")
        _kill_lost_crio(state)
        left = monitor.left(str(state), 10)
        clean = rig.rig("clean", "--all")
        assert stop.returncode == 0, stop.stderr
        assert not left, f"monitors left after crio-rig stop: {left}"
        assert clean.returncode == 0, clean.stderr
        assert not state.exists()


class Pod:
    """A pod sandbox of the rig; containers are made with `run`."""

    def __init__(self, rig: Rig, base: Path) -> None:
        self.rig = rig
        self.uid = uuid.uuid4().hex[:12]
        self.name = "pod-" + self.uid
        self.log_dir = rig.logs / self.name
        self.base = base
        self.config = base / "pod.json"
        self.config.write_text(json.dumps({
            "metadata": {"name": self.name, "namespace": "default", "uid": self.uid,
                         "attempt": 1},
            "log_directory": str(self.log_dir), "linux": {}}))
        self.id = rig.ok("runp", str(self.config))
        assert re.fullmatch(r"[0-9a-f]{64}", self.id), self.id
        self.containers: list[str] = []

    def create(self, name: str, command: list[str], tty: bool = False, stdin: bool = False,
               start: bool = True) -> str:
        """Create (and start) a container; returns its id. Its log is `log_path(name)`."""
        cfg = self.base / f"{name}.json"
        cfg.write_text(json.dumps({
            "metadata": {"name": name}, "image": {"image": IMAGE}, "command": command,
            "log_path": f"{name}.log", "tty": tty, "stdin": stdin, "linux": {}}))
        ctr = self.rig.ok("create", self.id, str(cfg), str(self.config))
        self.containers.append(ctr)
        if start:
            self.rig.ok("start", ctr)
        return ctr

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def remove(self) -> None:
        self.rig.ok("stopp", self.id)
        self.rig.ok("rmp", self.id)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll a condition another process makes true (a file it writes), with a deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def pod(rig: Rig, tmp_path: Path) -> Iterator[Pod]:
    """A fresh pod; afterwards it is stopped and removed, and no monitor of its
    containers (or of its infra container) may be left."""
    p = Pod(rig, tmp_path)
    try:
        yield p
    finally:
        p.remove()
        ids = [p.id, *p.containers]
        deadline = time.monotonic() + 20
        left = {i: rig.monitor.pids(i) for i in ids}
        while any(left.values()) and time.monotonic() < deadline:
            for pids in left.values():
                for pid in pids:
                    try:
                        wait_pid_gone(pid, max(0.0, deadline - time.monotonic()))
                    except TimeoutError:
                        pass
            left = {i: rig.monitor.pids(i) for i in ids}
        assert not any(left.values()), f"monitors left after the pod was removed: {left}"
        shutil.rmtree(p.log_dir, ignore_errors=True)
