"""OOM detection, signals, inherited fds, sd-notify, restore and internal failures."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from pymon import _native
from pymon.oom import OomWatcher, cgroup_path, is_cgroup2, parse_memory_events
from tests.conftest import RUNC, Bundles, Launcher
from tests.fakes.attach_client import connect, read_until_eof
from tests.fakes.engine import PYMON
from tests.fakes.runtime import calls, fake_runtime
from tests.integration.test_lifecycle import parse_log, runc_start

pytestmark = pytest.mark.timeout(90)
MIB = 1 << 20


# --- OOM ---

def test_oom_kill_cgroup_v1(bundles: Bundles, launcher: Launcher, tmp_path: Path) -> None:
    if is_cgroup2():
        pytest.skip("this host's /sys/fs/cgroup is cgroup v2; the v2 path is tested below")
    bundle = bundles.make(["sh", "-c", "echo start; tail /dev/zero"], memory_limit=16 * MIB)
    persist = tmp_path / "persist"
    persist.mkdir()
    session, paths = launcher.create_ok(bundle, "--persist-dir", str(persist))
    runc_start(paths.cid)
    session.wait_monitor()
    assert paths.exit_file.read_text() == "137"
    assert (bundle / "oom").exists() and (persist / "oom").exists()
    assert (persist / "exit").read_text() == "137"
    assert (bundle / "oom").stat().st_size == 0


def test_no_oom_file_without_oom(bundles: Bundles, launcher: Launcher, tmp_path: Path) -> None:
    bundle = bundles.make(["sh", "-c", "kill -9 $$ & sleep 5"], memory_limit=64 * MIB)
    session, paths = launcher.create_ok(bundle)
    runc_start(paths.cid)
    subprocess.run([RUNC, "kill", paths.cid, "KILL"], check=True)
    session.wait_monitor()
    assert paths.exit_file.read_text() == "137"
    assert not (bundle / "oom").exists()


def test_memory_events_parsing() -> None:
    assert parse_memory_events("low 0\nhigh 3\nmax 7\noom 1\noom_kill 1\n") == {
        "low": 0, "high": 3, "max": 7, "oom": 1, "oom_kill": 1}


def test_cgroup_v2_watcher_keeps_watching(tmp_path: Path) -> None:
    """memory.events in a cgroup2 tree: a change that is no OOM (high, max) must not end
    the watch (conmon drops its watch then); a later oom_kill is seen. The file stands in
    for the kernel's (this host's v2 hierarchy has no memory controller)."""
    root = tmp_path / "cgroup"
    cg = root / "machine" / "ctr"
    cg.mkdir(parents=True)
    (root / "cgroup.controllers").write_text("memory pids\n")
    events = cg / "memory.events"
    events.write_text("low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n")
    bundle, persist = tmp_path / "bundle", tmp_path / "persist"
    bundle.mkdir()
    persist.mkdir()
    assert is_cgroup2(str(root))
    w = OomWatcher(str(bundle), str(persist))
    w.watch_v2(str(events))
    assert w.fd is not None and not w.killed

    def wait_event() -> None:
        assert select.select([w.fd], [], [], 5)[0], "no inotify event"
        w.check()
    events.write_text("low 0\nhigh 4\nmax 2\noom 0\noom_kill 0\n")
    wait_event()
    assert not w.killed and not (bundle / "oom").exists()
    events.write_text("low 0\nhigh 4\nmax 2\noom 1\noom_kill 1\n")
    wait_event()
    assert w.killed and (bundle / "oom").exists() and (persist / "oom").exists()
    w.close()


def test_cgroup_v2_path_from_a_real_cgroup2_mount(tmp_path: Path) -> None:
    """The 0:: line of /proc/PID/cgroup names the container's cgroup in a real cgroup2
    hierarchy (mounted here by the test, as on a pure v2 host)."""
    mnt = tmp_path / "cg2"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "cgroup2", "none", str(mnt)], check=True)
    try:
        assert is_cgroup2(str(mnt))
        path = cgroup_path(os.getpid(), v2=True)
        assert path is not None and (mnt / path.lstrip("/")).is_dir()
        w = OomWatcher.for_pid(os.getpid(), str(tmp_path), None, root=str(mnt))
        # no memory controller on this host's v2 hierarchy: no memory.events, no watch
        has_events = (mnt / path.lstrip("/") / "memory.events").exists()
        assert (w.fd is not None) == has_events
        w.close()
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


# --- signals ---

def test_sigterm_before_the_runtime_is_forked_exits_1(tmp_path: Path) -> None:
    rt = fake_runtime(tmp_path, "ok-exit-5")
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with ours, theirs:
        env = dict(os.environ, _OCI_STARTPIPE=str(theirs.fileno()))
        p0 = subprocess.Popen([*PYMON, "-c", "c", "-u", "c", "-r", str(rt), "-b", str(tmp_path),
                               "--full-attach", "-l", "none"], env=env,
                              pass_fds=[theirs.fileno()])
        # it blocks on the start pipe: wait until it sits in read(2), then TERM it
        from tests.fakes.engine import blocked_reading, wait_for
        wait_for(lambda: blocked_reading(p0.pid, theirs.fileno()),
                 what="P0 blocked reading the start pipe")
        p0.send_signal(signal.SIGTERM)
        assert p0.wait(10) == 1
    assert calls(rt) == []


def test_sigint_to_monitor_reaches_container(bundles: Bundles, launcher: Launcher) -> None:
    bundle = bundles.make(["sh", "-c", "trap 'exit 130' INT; echo up; while :; do sleep 0.05; done"])
    session, paths = launcher.create_ok(bundle)
    sock = connect(bundle / "attach")
    runc_start(paths.cid)
    read_until_eof(sock, until=b"up\n")  # the trap is installed
    os.kill(session.monitor_pid, signal.SIGINT)
    session.wait_monitor()
    assert paths.exit_file.read_text() == "130"


# --- inherited fds ---

def test_preserved_fds_reach_the_container(bundles: Bundles, launcher: Launcher,
                                           tmp_path: Path) -> None:
    """--preserve-fds: the engine's fds 3 and 4 are at 3 and 4 in the runtime (and so in
    the container); nothing else of ours is."""
    r, w = os.pipe()
    extra = tmp_path / "extra"
    extra.write_text("preserved-file\n")
    bundle = bundles.make(["sh", "-c", "echo through-fd-3 >&3; cat <&4; ls /proc/self/fd"])
    fd4 = os.open(extra, os.O_RDONLY)
    fdmap = [sys.executable, "-c",
             ("import os, sys; os.dup2(int(sys.argv[1]), 3); os.dup2(int(sys.argv[2]), 4); "
              "os.execvp(sys.argv[3], sys.argv[3:])"), str(w), str(fd4)]
    session, paths = launcher.create_ok(bundle, "--runtime-opt", "--preserve-fds",
                             "--runtime-opt", "2", wrapper=fdmap, extra_fds=[w, fd4])
    os.close(w)
    os.close(fd4)
    runc_start(paths.cid)
    session.wait_monitor()
    assert os.read(r, 100) == b"through-fd-3\n"
    assert os.read(r, 100) == b""  # the monitor closed its copy at teardown
    os.close(r)
    records = [rec[2] for rec in parse_log(paths.log.read_bytes())]
    assert records[0] == b"preserved-file"
    assert sorted(records[1:]) == [b"0", b"1", b"2", b"3", b"4", b"5"]  # 5: ls's own dir fd


def test_engine_fds_are_closed_before_the_exit_file(bundles: Bundles, launcher: Launcher) -> None:
    """A port-reservation socket (say) the engine passed must be closed before the exit file
    appears, so the engine can rebind at once."""
    r, w = os.pipe()
    bundle = bundles.make(["true"])
    session, paths = launcher.create_ok(bundle, extra_fds=[w])
    os.close(w)
    inotify = _native.inotify_init()
    _native.inotify_add_watch(inotify, str(paths.exits), _native.IN_MOVED_TO)
    os.set_blocking(inotify, True)
    state: dict[str, bytes | None] = {}

    def watch() -> None:
        for _, _, name in _native.inotify_events(os.read(inotify, 4096)):
            if name == paths.cid:
                state["pipe"] = os.read(r, 1) if select.select([r], [], [], 0)[0] else None
    t = threading.Thread(target=watch)
    t.start()
    runc_start(paths.cid)
    t.join(20)
    session.wait_monitor()
    os.close(inotify)
    os.close(r)
    assert state["pipe"] == b"", "the engine's fd was still open when the exit file appeared"


# --- sd-notify ---

def test_sdnotify_relays_only_allowed_lines(bundles: Bundles, launcher: Launcher,
                                            tmp_path: Path) -> None:
    host = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    host_path = str(tmp_path / "host-notify.sock")
    host.bind(host_path)
    bundle = bundles.make(["sh", "-c", "read x"])
    (bundle / "notify").mkdir()
    session, paths = launcher.create_ok(bundle, "-i", f"--sdnotify-socket={host_path}")
    inside = bundle / "notify" / "notify.sock"
    assert inside.exists() and (inside.stat().st_mode & 0o777) == 0o777
    client = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    client.sendto(b"READY=1\nFOO=bar\nSTATUS=hello world\nMAINPID=5\nWATCHDOG=1\r\nERRNO=3",
                  str(inside))
    client.sendto(b"MAINPID=1\nFDSTORE=1", str(inside))  # nothing allowed: nothing sent
    client.sendto(b"STOPPING=1", str(inside))
    assert select.select([host], [], [], 10)[0]
    assert host.recv(4096) == b"READY=1\nSTATUS=hello world\nWATCHDOG=1\nERRNO=3"
    assert select.select([host], [], [], 10)[0]
    assert host.recv(4096) == b"STOPPING=1"
    client.close()
    host.close()
    runc_start(paths.cid)
    subprocess.run([RUNC, "kill", paths.cid, "KILL"], check=True)
    session.wait_monitor()


# --- restore ---

def test_restore_argv(launcher: Launcher, tmp_path: Path) -> None:
    rt = fake_runtime(tmp_path, "ok-exit-5")
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    session, paths = launcher.create(bundle, "--restore", "/ckpt", "--runtime-opt",
                                     "--tcp-established", "--no-pivot", runtime=str(rt))
    assert session.wait_p0() == 0
    assert json.loads(session.read_sync())["data"] > 0
    session.wait_monitor()
    assert calls(rt) == [["restore", "--bundle", str(bundle), "--pid-file", str(paths.pidfile),
                          "--no-pivot", "--detach", "--image-path", "/ckpt", "--work-path",
                          str(bundle), "--tcp-established", paths.cid]]
    assert paths.exit_file.read_text() == "5"


# --- internal failure ---

def test_unexpected_error_still_records_the_exit(launcher: Launcher, tmp_path: Path) -> None:
    """A bug in a monitor task: logged with its traceback, the container's exit is still
    waited for and written, and the monitor exits non-zero (seen with --sync)."""
    rt = fake_runtime(tmp_path, "ok-exit-5")
    inject = ("import sys, pymon.stdio as s\n"
              "def boom(*a): raise RuntimeError('injected fault')\n"
              "s.pump = boom\n"
              "import pymon.monitor.life as m; m.pump = boom\n"
              "from pymon.launcher.main import main; sys.exit(main())\n")
    res = subprocess.run([sys.executable, "-c", inject, "--sync", "--full-attach", "-c", "c",
                          "-u", "c", "-r", str(rt), "-b", str(tmp_path), "-l", "none",
                          "--exit-dir", str(tmp_path), "-p", str(tmp_path / "pid"),
                          "--log-level", "debug"], capture_output=True, timeout=30)
    assert res.returncode == 1
    assert (tmp_path / "c").read_text() == "5"


def test_root_cgroup_is_never_taken_as_the_containers_own(tmp_path: Path) -> None:
    """A process in the root memory cgroup (a fake runtime's "container"): earlier OOM
    kills on the host must not be reported as this container's."""
    w = OomWatcher.for_pid(os.getpid(), str(tmp_path), None, fresh=True)
    try:
        if cgroup_path(os.getpid(), is_cgroup2()) in (None, "/"):
            assert not w.fresh
        w.check()
        assert not w.killed and not (tmp_path / "oom").exists()
    finally:
        w.close()
