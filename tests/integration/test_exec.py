"""Exec sessions the way podman runs them (§10): one monitor per exec, attach handshake,
pid then exit code, exit file named after the container; timeouts; legacy exec."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import RUNC, Bundles, Launcher
from tests.fakes.attach_client import connect, read_until_eof
from tests.fakes.engine import Session, monitors_of, wait_for_spare, wait_pid_gone
from tests.integration.test_lifecycle import runc_start

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def running(bundles: Bundles, launcher: Launcher):  # type: ignore[no-untyped-def]
    """A running container to exec into: (container id, its bundle, its session)."""
    bundle = bundles.make(["sleep", "1000"])
    session, paths = launcher.create(bundle, log="none")
    assert session.wait_p0() == 0
    assert json.loads(session.read_sync())["data"] > 0
    runc_start(paths.cid)
    return paths.cid, bundle, session


def process_spec(path: Path, args: list[str], tty: bool = False) -> Path:
    path.write_text(json.dumps({
        "args": args, "cwd": "/", "terminal": tty, "user": {"uid": 0, "gid": 0},
        "env": ["PATH=/bin", "TERM=xterm"]}))
    return path


class Exec:
    """podman's exec: `<ctr bundle>/<session id>/` holds the session's files."""

    def __init__(self, launcher: Launcher, cid: str, ctr_bundle: Path, args: list[str],
                 *extra: str, tty: bool = False, attach: bool = True) -> None:
        self.sid = uuid.uuid4().hex[:12]
        self.dir = ctr_bundle / self.sid
        (self.dir / "exit").mkdir(parents=True)
        spec = process_spec(self.dir / "exec-process-1", args, tty)
        argv = ["--api-version", "1", "-c", cid, "-u", self.sid, "-r", RUNC, "-b", str(self.dir),
                "-p", str(self.dir / "exec_pid"), "-n", "test", "--exit-dir", str(self.dir / "exit"),
                "--full-attach", "-l", "none", "--log-level", "warning", *extra,
                "-e", "--exec-process-spec", str(spec)]
        if attach:
            argv.append("--exec-attach")
        self.session: Session = launcher.launch(argv, exec_attach=attach, cwd=str(self.dir))
        self.exit_file = self.dir / "exit" / cid

    def attach(self) -> socket.socket:
        """The handshake: attach-pipe message, connect, second start byte."""
        assert self.session.read_attach_pipe() == b'{"data": 0}\n'
        sock = connect(self.dir / "attach")
        self.session.send_start()
        return sock

    def pid_message(self) -> dict:
        return json.loads(self.session.read_sync())


def test_exec_exit_codes_and_output(running, launcher: Launcher) -> None:  # type: ignore[no-untyped-def]
    cid, bundle, _ = running
    for code in (0, 1, 42):
        ex = Exec(launcher, cid, bundle, ["sh", "-c", f"echo out-{code}; echo err >&2; exit {code}"])
        sock = ex.attach()
        assert ex.session.wait_p0() == 0
        assert ex.pid_message()["data"] > 0
        got = read_until_eof(sock)
        assert bytes(got.data["stdout"]) == b"out-%d\n" % code
        assert bytes(got.data["stderr"]) == b"err\n"
        assert ex.session.read_sync() == b'{"data": %d}\n' % code  # after the exit file
        assert ex.exit_file.read_text() == str(code)


def test_exec_stdin_and_tty(running, launcher: Launcher) -> None:  # type: ignore[no-untyped-def]
    cid, bundle, _ = running
    ex = Exec(launcher, cid, bundle, ["cat"], "-i")
    sock = ex.attach()
    assert ex.pid_message()["data"] > 0
    sock.send(b"piped\n")
    sock.shutdown(socket.SHUT_WR)
    assert bytes(read_until_eof(sock).data["stdout"]) == b"piped\n"
    assert json.loads(ex.session.read_sync()) == {"data": 0}

    # podman writes the size before start #2, i.e. before the pty exists. (It also puts
    # it in the spec's consoleSize, which runc applies itself: an exec'd process starts
    # right after the pty is handed over, so the ctl size lands a moment later.)
    tty = Exec(launcher, cid, bundle, ["sh", "-c", "sleep 0.5; stty size; tty"], "-t", tty=True)
    assert tty.session.read_attach_pipe() == b'{"data": 0}\n'
    (tty.dir / "ctl").write_text("1 40 120\n")
    sock = connect(tty.dir / "attach")
    tty.session.send_start()
    assert tty.pid_message()["data"] > 0
    out = bytes(read_until_eof(sock).data["stdout"])
    assert out.startswith(b"40 120\r\n/dev/pts/")
    assert tty.session.read_sync() == b'{"data": 0}\n'  # sent after the exit file
    assert tty.exit_file.read_text() == "0"


def test_concurrent_execs_do_not_interfere(running, launcher: Launcher) -> None:  # type: ignore[no-untyped-def]
    cid, bundle, _ = running
    execs = [Exec(launcher, cid, bundle,
                  ["sh", "-c", f"for i in $(seq 1 200); do echo exec-{n}-$i; done; exit {n}"])
             for n in range(6)]
    socks = [ex.attach() for ex in execs]
    results: dict[int, bytes] = {}

    def read(n: int) -> None:
        results[n] = bytes(read_until_eof(socks[n]).data["stdout"])
    threads = [threading.Thread(target=read, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for n, ex in enumerate(execs):
        assert results[n] == b"".join(b"exec-%d-%d\n" % (n, i) for i in range(1, 201))
        ex.session.wait_p0()
        assert ex.pid_message()["data"] > 0
        assert ex.session.read_sync() == b'{"data": %d}\n' % n
        assert ex.exit_file.read_text() == str(n)


def test_exec_into_a_stopped_container_fails_with_message(bundles: Bundles,
                                                          launcher: Launcher) -> None:
    bundle = bundles.make(["true"])
    cid = launcher.new_cid()
    ex = Exec(launcher, cid, bundle, ["true"])  # no such container
    ex.attach()
    msg = ex.pid_message()
    assert msg["data"] == -1 and "container" in msg["message"], msg
    assert ex.session.read_sync() == b""
    assert not ex.exit_file.exists()


def test_exec_timeout(running, launcher: Launcher) -> None:  # type: ignore[no-untyped-def]
    cid, bundle, _ = running
    ex = Exec(launcher, cid, bundle, ["sleep", "30"], "-T", "1")
    sock = ex.attach()
    assert ex.pid_message()["data"] > 0
    assert ex.session.read_sync(timeout=20) == b'{"data": -1, "message": "command timed out"}\n'
    assert ex.exit_file.read_text() == "-1"
    assert read_until_eof(sock).eof


def test_legacy_exec_sends_only_the_exit_code(running, launcher: Launcher,  # type: ignore[no-untyped-def]
                                              tmp_path: Path) -> None:
    """CRI-O's exec-sync: no --api-version, no -u/-b, --sync; one exit_code message."""
    cid, _, _ = running
    spec = process_spec(tmp_path / "spec.json", ["sh", "-c", "echo legacy; exit 9"])
    session = launcher.launch(["-c", cid, "-n", "x", "-r", RUNC, "-p", str(tmp_path / "pid"),
                               "-e", "-l", str(tmp_path / "exec.log"), "--sync",
                               "--exec-process-spec", str(spec)])
    assert session.wait_p0(30) == 9  # --sync: the first process is the monitor
    assert session.read_sync() == b'{"exit_code": 9}\n'
    assert b"stdout F legacy\n" in (tmp_path / "exec.log").read_bytes()


def test_legacy_exec_timeout(running, launcher: Launcher, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cid, _, _ = running
    spec = process_spec(tmp_path / "spec.json", ["sleep", "30"])
    session = launcher.launch(["-c", cid, "-r", RUNC, "-p", str(tmp_path / "pid"), "-e",
                               "-l", "none", "--sync", "-T", "1",
                               "--exec-process-spec", str(spec)])
    assert session.wait_p0(30) == 255
    assert session.read_sync() == b'{"exit_code": -1, "message": "command timed out"}\n'


def test_create_timeout(bundles: Bundles, launcher: Launcher) -> None:
    bundle = bundles.make(["sleep", "30"])
    session, paths = launcher.create(bundle, "-T", "1")
    assert session.wait_p0() == 0
    assert json.loads(session.read_sync())["data"] > 0
    runc_start(paths.cid)
    session.wait_monitor()
    assert paths.exit_file.read_text() == "-1"
    assert session.read_sync() == b""  # no extra message for create


def test_background_writer_is_drained_then_idle_holder_released(running, launcher: Launcher) -> None:  # type: ignore[no-untyped-def]
    """The exec'd process exits but leaves children holding its stdout: what they write
    while the pipe stays busy is relayed; a holder that stays quiet does not keep the
    engine waiting for the exit file (the drain stops after DRAIN_IDLE)."""

    cid, bundle, _ = running
    ex = Exec(launcher, cid, bundle,
              ["sh", "-c", ("(for i in 1 2 3 4 5; do sleep 0.05; echo bg-$i; done; sleep 30) & "
                            "echo main")])
    sock = ex.attach()
    assert ex.pid_message()["data"] > 0
    started = time.monotonic()
    got = read_until_eof(sock)
    assert bytes(got.data["stdout"]) == b"main\n" + b"".join(b"bg-%d\n" % i for i in range(1, 6))
    assert ex.session.read_sync(timeout=10) == b'{"data": 0}\n'
    assert time.monotonic() - started < 1.5  # well under DRAIN_DEADLINE (2 s) + margin


def server_children(launcher: Launcher) -> set[int]:
    if launcher.server is None:
        return set()
    return set(monitors_of(launcher.server.pid))


def server_sockets(launcher: Launcher) -> int:
    assert launcher.server is not None
    fds = Path(f"/proc/{launcher.server.pid}/fd")
    return sum(1 for fd in fds.iterdir() if os.readlink(fd).startswith("socket:"))


def test_a_warm_exec_session_gets_no_rescue_channel(running, launcher: Launcher) -> None:  # type: ignore[no-untyped-def]
    """Exec sessions are not rescued (monitor/setup.py), so the server makes no channel
    for one: nothing to create, watch and close on each of CRI-O's exec probes. A
    container's monitor has its channel (the `running` one holds it still)."""
    if launcher.server is None:
        pytest.skip("a cold monitor has no server")
    cid, bundle, _ = running
    server = launcher.server.pid
    # Counted while the server has a spare ready (spare.py), which holds one socket of the
    # server's: before the exec is handed to it, and once the next one is forked
    spare = wait_for_spare(server, other_than=None)
    before = server_sockets(launcher)
    assert before >= 3  # the listener, the running container's channel, the spare's
    ex = Exec(launcher, cid, bundle, ["sleep", "1000"], attach=False)
    assert ex.pid_message()["data"] > 0
    assert spare in server_children(launcher)  # handed to the spare, and running
    wait_for_spare(server, other_than=spare)
    assert server_sockets(launcher) == before



BAD_EXEC_INPUT = ["timeout 0", "timeout -5", "spec missing", "spec malformed", "log dir gone"]


@pytest.mark.parametrize("case", BAD_EXEC_INPUT)
def test_bad_exec_input_reaches_the_sync_pipe(launcher: Launcher, tmp_path: Path,
                                              case: str) -> None:
    """CRI-O's ExecSync shape with input a caller got wrong: CRI-O reads only the sync pipe
    (the monitor's stderr is not shown), so the reason must be there, with a non-zero
    exit and nothing left running, whether the launcher ran cold or handed over to a
    warm monitor (whose failures before the fork used to reach its stderr only)."""
    spec = process_spec(tmp_path / "spec.json", ["true"])
    log = tmp_path / "exec.log"
    extra: list[str] = []
    if case.startswith("timeout"):
        value = case.split()[1]
        extra = ["-T", value]
        want = f"Timeout must be a positive number of seconds, got {value}"
    elif case == "spec missing":
        spec.unlink()
        want = f"Exec process spec {spec}: No such file or directory"
    elif case == "spec malformed":
        spec.write_text('{"args": ["true"')
        want = f"Exec process spec {spec} is not valid: "
    else:
        log = tmp_path / "gone" / "exec.log"
        want = "Failed to open log file No such file or directory"
    before = server_children(launcher)
    session = launcher.launch(["-c", "no-such-" + uuid.uuid4().hex[:8], "-n", "x", "-r", RUNC,
                               "-p", str(tmp_path / "pid"), "-e", "-l", str(log), "--sync",
                               *extra, "--exec-process-spec", str(spec)])
    assert session.wait_p0(30) != 0, session.p0_stderr
    msg = json.loads(session.read_sync())
    assert msg["exit_code"] == -1 and want in msg["message"], msg
    assert session.read_sync() == b""  # one message, then EOF: nothing holds the pipe
    if launcher.server is not None:  # served warm, by a monitor that is gone now
        launcher.server.wait_for(f"for launcher {session.p0.pid}".encode())
        for pid in server_children(launcher) - before:
            wait_pid_gone(pid, 10)


def test_an_exec_that_ends_before_the_monitor_watches_it_keeps_its_status(
        running, launcher: Launcher) -> None:  # type: ignore[no-untyped-def]
    """The exec'd process has usually exited by the time `runc exec` has: the monitor
    records its exit at once, and must still end cleanly (an attach server closed before
    its task first ran once failed the monitor, which then exited 1)."""
    cid, bundle, _ = running
    for _ in range(3):
        ex = Exec(launcher, cid, bundle, ["sh", "-c", "exit 7"], "--sync", attach=False)
        assert ex.session.wait_p0(30) == 7, ex.session.p0_stderr
        assert ex.exit_file.read_text() == "7"
