"""Faults: failing, hanging and lying runtimes (fake runtimes), a closed start pipe, and
bad input that must fail cleanly in P0 with nothing left behind."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from tests.conftest import Launcher
from tests.fakes.engine import PYMON, wait_for, wait_pid_gone
from tests.fakes.runtime import calls, fake_runtime, runtime_pid

pytestmark = pytest.mark.timeout(60)


def exit_probe(tmp_path: Path) -> tuple[list[str], Path]:
    probe = tmp_path / "exit-command-ran"
    return ["/bin/sh", "-c", f"echo ran > {probe}"], probe


def test_create_failure_reaches_engine(launcher: Launcher, tmp_path: Path) -> None:
    rt = fake_runtime(tmp_path, "fail")
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    cmd, probe = exit_probe(tmp_path)
    session, paths = launcher.create(bundle, runtime=str(rt), exit_command=cmd)
    assert session.wait_p0() == 0
    assert session.read_sync() == (
        b'{"data": -1, "message": "fake create failed: no such file or directory\\n"}\n')
    session.wait_monitor()
    assert session.read_sync() == b""
    assert not paths.exit_file.exists(), "no exit file after a failed create"
    assert probe.read_text() == "ran\n", "the exit command runs after a failed create"
    [argv] = calls(rt)
    assert argv == ["create", "--bundle", str(bundle), "--pid-file", str(paths.pidfile), paths.cid]


def test_create_failure_without_stderr_omits_message(launcher: Launcher, tmp_path: Path) -> None:
    rt = fake_runtime(tmp_path, "fail-silent")
    session, _paths = launcher.create(tmp_path, runtime=str(rt))
    assert session.wait_p0() == 0
    assert session.read_sync() == b'{"data": -1}\n'
    session.wait_monitor()


def test_sync_mode_monitor_exits_1_on_failure(tmp_path: Path) -> None:
    """With --sync, P0 is the monitor: its status is visible, and 1 after a failed create."""
    rt = fake_runtime(tmp_path, "fail")
    res = subprocess.run([*PYMON, "--sync", "-c", "c", "-u", "c", "-r", str(rt), "-b",
                          str(tmp_path), "-l", "none", "--exit-dir", str(tmp_path)],
                         capture_output=True, timeout=30)
    assert res.returncode == 1
    assert not (tmp_path / "conmon.pid").exists()


def test_sync_mode_monitor_exit_status_is_container_status(tmp_path: Path) -> None:
    rt = fake_runtime(tmp_path, "ok-exit-5")
    res = subprocess.run([*PYMON, "--sync", "--full-attach", "-c", "c", "-u", "c", "-r", str(rt),
                          "-b", str(tmp_path), "-l", f"k8s-file:{tmp_path}/log", "--exit-dir",
                          str(tmp_path), "-p", str(tmp_path / "pid")],
                         capture_output=True, timeout=30)
    assert res.returncode == 5
    assert (tmp_path / "c").read_text() == "5"


def test_a_container_that_is_not_the_monitors_child_is_recorded_when_it_dies(
        launcher: Launcher, tmp_path: Path) -> None:
    """A runtime that leaves the container to another process (here the test's own child):
    the monitor cannot reap it, so it watches it with a pidfd and, once it is gone, writes
    0, as conmon assumes; the main task must not wait for a reap that never comes."""
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        rt = fake_runtime(tmp_path, "foreign-pid")
        session, paths = launcher.create(tmp_path, runtime=str(rt),
                                         env=dict(os.environ, FOREIGN_PID=str(stranger.pid)))
        assert session.wait_p0() == 0, session.p0_stderr
        assert json.loads(session.read_sync())["data"] == stranger.pid
        launcher.check_mode(session)
        # Killed only once the monitor watches it (a pidfd among its fds): one that died
        # before would be found gone by the reaper's first sweep, another path
        wait_for(lambda: holds_pidfd(session.monitor_pid),
                 what="the monitor watching its container through a pidfd")
        assert not paths.exit_file.exists()  # the container lives
        stranger.kill()
        assert stranger.wait(10) == -signal.SIGKILL  # reaped here, by its parent
        session.wait_monitor()
        assert paths.exit_file.read_text() == "0"
    finally:
        stranger.kill()
        stranger.wait()


def holds_pidfd(pid: int) -> bool:
    fds = Path(f"/proc/{pid}/fd")
    for fd in os.listdir(fds):
        try:
            if os.readlink(fds / fd) == "anon_inode:[pidfd]":
                return True
        except FileNotFoundError:
            pass  # closed meanwhile
    return False


def test_message_is_capped_at_one_packet(launcher: Launcher, tmp_path: Path) -> None:
    rt = fake_runtime(tmp_path, "long-message")
    session, _ = launcher.create(tmp_path, runtime=str(rt))
    assert session.wait_p0() == 0
    packet = session.read_sync()
    assert len(packet) <= 4096
    msg = json.loads(packet)
    assert msg["data"] == -1 and set(msg["message"]) == {"x"} and len(msg["message"]) > 4000
    session.wait_monitor()


@pytest.mark.parametrize("behaviour, message", [
    ("no-pidfile", "no pid for you\n"),
    ("no-pidfile-silent", "Failed to open file \u201c{pidfile}\u201d: No such file or directory"),
])
def test_runtime_without_pidfile(launcher: Launcher, tmp_path: Path, behaviour: str,
                                 message: str) -> None:
    rt = fake_runtime(tmp_path, behaviour)
    session, paths = launcher.create(tmp_path, runtime=str(rt))
    assert session.wait_p0() == 0
    assert json.loads(session.read_sync()) == {
        "data": -1, "message": message.format(pidfile=paths.pidfile)}
    session.wait_monitor()
    assert not paths.exit_file.exists()


def test_garbage_in_pidfile(launcher: Launcher, tmp_path: Path) -> None:
    rt = fake_runtime(tmp_path, "garbage-pidfile")
    session, _paths = launcher.create(tmp_path, runtime=str(rt))
    assert session.wait_p0() == 0
    msg = json.loads(session.read_sync())
    assert msg["data"] == -1 and "Invalid pid" in msg["message"], msg
    session.wait_monitor()


def test_hanging_runtime_gets_forwarded_sigterm(launcher: Launcher, tmp_path: Path) -> None:
    rt = fake_runtime(tmp_path, "hang")
    session, _ = launcher.create(tmp_path, runtime=str(rt))
    assert session.wait_p0() == 0
    with pytest.raises(TimeoutError):
        session.read_sync(timeout=0.5)  # the runtime is still "creating"
    os.kill(session.monitor_pid, signal.SIGTERM)
    assert json.loads(session.read_sync()) == {"data": -1}  # R died of the forwarded signal
    session.wait_monitor()
    wait_pid_gone(runtime_pid(rt), 5)


def test_killed_monitor_takes_hanging_runtime_with_it(launcher: Launcher, tmp_path: Path) -> None:
    rt = fake_runtime(tmp_path, "hang")
    session, _ = launcher.create(tmp_path, runtime=str(rt))
    assert session.wait_p0() == 0
    with pytest.raises(TimeoutError):
        session.read_sync(timeout=0.5)
    os.kill(session.monitor_pid, signal.SIGKILL)
    wait_pid_gone(runtime_pid(rt), 5)  # PDEATHSIG
    assert session.read_sync() == b""


def test_start_pipe_closed_without_a_byte(launcher: Launcher, tmp_path: Path) -> None:
    rt = fake_runtime(tmp_path, "ok-exit-5")
    session, paths = launcher.create(tmp_path, runtime=str(rt), send_start=False)
    session.start.close()  # EOF on the start pipe is not an error
    assert session.wait_p0() == 0
    assert json.loads(session.read_sync())["data"] > 0
    session.wait_monitor()
    assert paths.exit_file.read_text() == "5"


def test_nothing_forked_before_start_byte(launcher: Launcher, tmp_path: Path) -> None:
    rt = fake_runtime(tmp_path, "ok-exit-5")
    session, paths = launcher.create(tmp_path, runtime=str(rt), send_start=False)
    with pytest.raises(subprocess.TimeoutExpired):
        session.p0.wait(timeout=0.5)
    assert not paths.conmon_pidfile.exists() and calls(rt) == []
    children = Path(f"/proc/{session.p0.pid}/task/{session.p0.pid}/children").read_text()
    assert children == ""
    session.send_start()
    assert session.wait_p0() == 0
    assert json.loads(session.read_sync())["data"] > 0
    session.wait_monitor()


# --- bad input: exit 1 in P0, a clear message, nothing left behind ---

def run_p0(tmp_path: Path, *args: str, env: dict[str, str] | None = None,
           pass_fds: tuple[int, ...] = ()) -> subprocess.CompletedProcess[str]:
    before = set(os.listdir(tmp_path))
    res = subprocess.run([*PYMON, *args], capture_output=True, text=True, timeout=20,
                         cwd=str(tmp_path), env=env, pass_fds=pass_fds)
    assert set(os.listdir(tmp_path)) == before, "a failed start left files behind"
    return res


def base(tmp_path: Path, runtime: str = "/bin/true") -> list[str]:
    return ["--api-version", "1", "-c", "cid", "-u", "cid", "-r", runtime,
            "-l", f"k8s-file:{tmp_path}/ctr.log", "-P", str(tmp_path / "conmon.pid")]


def test_bundle_that_does_not_exist(tmp_path: Path) -> None:
    res = run_p0(tmp_path, *base(tmp_path), "-b", str(tmp_path / "nope"))
    assert res.returncode == 1
    assert res.stderr == f"[conmon:e]: Bundle path {tmp_path}/nope is not a directory\n"


def test_unwritable_exit_dir(tmp_path: Path) -> None:
    res = run_p0(tmp_path, *base(tmp_path), "--exit-dir", "/proc/self")
    assert res.returncode == 1
    assert res.stderr == "[conmon:e]: The exit directory /proc/self is not a writable directory\n"
    res = run_p0(tmp_path, *base(tmp_path), "--exit-dir", str(tmp_path / "missing"))
    assert res.returncode == 1 and "is not a writable directory" in res.stderr


def test_sync_fd_not_open(tmp_path: Path) -> None:
    env = dict(os.environ, _OCI_SYNCPIPE="250")
    res = run_p0(tmp_path, *base(tmp_path), env=env)
    assert res.returncode == 1
    assert res.stderr == "[conmon:e]: unable to make _OCI_SYNCPIPE CLOEXEC Bad file descriptor\n"


def test_sync_fd_not_a_number(tmp_path: Path) -> None:
    env = dict(os.environ, _OCI_SYNCPIPE="3x")
    res = run_p0(tmp_path, *base(tmp_path), env=env)
    assert res.returncode == 1
    assert res.stderr == "[conmon:e]: unable to parse _OCI_SYNCPIPE\n"


def test_exec_attach_without_attach_pipe(tmp_path: Path) -> None:
    res = run_p0(tmp_path, *base(tmp_path), "-e", "--exec-process-spec", "x", "--exec-attach")
    assert res.returncode == 1
    assert res.stderr == "[conmon:e]: --attach specified but _OCI_ATTACHPIPE was not\n"


def test_bad_input_leaves_no_process(tmp_path: Path) -> None:
    """A rejected start with a live start pipe: P0 exits at once, forks nothing."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with ours, theirs:
        env = dict(os.environ, _OCI_STARTPIPE=str(theirs.fileno()))
        proc = subprocess.Popen([*PYMON, *base(tmp_path), "-b", str(tmp_path / "nope")],
                                env=env, pass_fds=[theirs.fileno()], stderr=subprocess.PIPE,
                                cwd=str(tmp_path))
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 1 and b"is not a directory" in err
    assert not (tmp_path / "conmon.pid").exists()


# --- run by hand: no engine, no sync pipe ---

def test_by_hand_p0_exits_0_even_if_create_fails(tmp_path: Path) -> None:
    """Like conmon: the first process exits 0 right after the fork; with no sync pipe a
    later failure has nobody to tell (conmon's own tests rely on the exit status)."""
    rt = fake_runtime(tmp_path, "fail")
    cmd, probe = exit_probe(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("_OCI_")}
    res = subprocess.run([*PYMON, "-c", "c", "-u", "c", "-r", str(rt), "-b", str(tmp_path),
                          "--full-attach", "-l", "none", "-P", str(tmp_path / "conmon.pid"),
                          "--exit-dir", str(tmp_path), "--exit-command", cmd[0],
                          "--exit-command-arg", cmd[1], "--exit-command-arg", cmd[2]],
                         capture_output=True, text=True, timeout=30, env=env)
    assert res.returncode == 0 and res.stderr == ""
    wait_pid_gone(int((tmp_path / "conmon.pid").read_text()), 10)
    assert probe.read_text() == "ran\n" and not (tmp_path / "c").exists()


def test_monitor_setup_failure_reaches_engine(launcher: Launcher, tmp_path: Path) -> None:
    """conmon sends nothing when the monitor fails before the runtime runs; we send why."""
    rt = fake_runtime(tmp_path, "ok-exit-5")
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    cid = launcher.new_cid()
    session = launcher.launch(["--api-version", "1", "-c", cid, "-u", cid, "-r", str(rt),
                               "-b", str(bundle), "-l", "none",
                               "--socket-dir-path", str(tmp_path / "missing")])
    assert session.wait_p0() == 0
    assert json.loads(session.read_sync()) == {
        "data": -1, "message": "Failed to create container attach socket No such file or directory"}
    assert session.read_sync() == b""
    assert calls(rt) == []
