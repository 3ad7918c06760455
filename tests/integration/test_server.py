"""pymon-server under faults: killed, stale, hostile, crowded, upgraded. Each test runs its
own server (tests/fakes/server.py) so that it may break it."""

from __future__ import annotations

import array
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pymon import handover
from pymon.cli import VERSION
from tests.conftest import RUNC, Bundles, Launcher
from tests.fakes.engine import (
    SPARE_COMM,
    Session,
    comm_of,
    monitors_of,
    ppid,
    wait_for,
    wait_for_spare,
    wait_pid_gone,
)
from tests.fakes.server import WarmServer
from tests.integration.test_lifecycle import runc_start

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[WarmServer]:
    s = WarmServer(tmp_path / "srv" / "server.sock")
    yield s
    s.stop()


@pytest.fixture
def warm(tmp_path: Path, server: WarmServer) -> Iterator[Launcher]:
    launcher = Launcher(tmp_path, server)
    yield launcher
    launcher.cleanup()


def token_pipe(full: bool = True) -> tuple[int, int]:
    """A launcher's token pipe (handover.py): its byte in it unless `full` is False."""
    r, w = os.pipe2(os.O_NONBLOCK)
    if full:
        os.write(w, handover.TOKEN)
    return r, w


def raw_request(path: Path, data: bytes, fds: list[int] = (),  # type: ignore[assignment]
                token: int | None = None) -> tuple[str, int, str]:
    """Send `data` with `fds` and then `token` (a fresh full token pipe's read end if
    None, none if -1); returns the one reply."""
    own = token_pipe() if token is None else None
    if own is not None:
        token = own[0]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
            s.settimeout(10)
            s.connect(str(path))
            sent = [*fds, *([token] if token != -1 else [])]
            anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", sent).tobytes())] \
                if sent else []
            s.sendmsg([data], anc)
            return handover.decode_reply(s.recv(4096))
    finally:
        for fd in own or ():
            os.close(fd)


def start_and_wait(session: Session, cid: str) -> None:
    runc_start(cid)
    session.wait_monitor()


def test_server_killed_while_20_monitors_run(bundles: Bundles, warm: Launcher,
                                              server: WarmServer) -> None:
    """SIGKILL the server with 20 containers running: every exit is still recorded (the
    monitors are not the server's to take down), and new launches run cold."""
    bundle_args = ["sh", "-c", "trap 'exit 3' TERM; while :; do sleep 0.05; done"]
    running = []
    for _ in range(20):
        session, paths = warm.create_ok(bundles.make(bundle_args))
        runc_start(paths.cid)
        running.append((session, paths))
    server.proc.kill()  # type: ignore[union-attr]
    server.proc.wait()  # type: ignore[union-attr]
    for session, paths in running:
        assert ppid(session.monitor_pid) not in (None, server.pid)  # alive, re-parented
        subprocess.run([RUNC, "kill", paths.cid, "TERM"], check=True)
    for session, paths in running:
        session.wait_monitor()
        assert paths.exit_file.read_bytes() == b"3"
    # the socket file is left behind by the killed server: the launcher finds nobody there
    assert server.socket.exists()
    session, paths = warm.create(bundles.make(["true"]))
    assert session.wait_p0() == 0
    assert json.loads(session.read_sync())["data"] > 0
    assert ppid(session.monitor_pid) != server.pid
    start_and_wait(session, paths.cid)
    assert paths.exit_file.read_bytes() == b"0"


def test_stale_socket_file_means_cold_and_is_replaced(bundles: Bundles, tmp_path: Path) -> None:
    path = tmp_path / "stale" / "server.sock"
    path.parent.mkdir()
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens: a crashed server's leftover
    server = WarmServer(path, start=False)
    launcher = Launcher(tmp_path, server)
    try:
        session, paths = launcher.create(bundles.make(["true"]))
        assert session.wait_p0() == 0, session.p0_stderr
        assert json.loads(session.read_sync())["data"] > 0
        start_and_wait(session, paths.cid)
        assert paths.exit_file.read_bytes() == b"0"
        server.start()  # replaces the stale file
        session, paths = launcher.create_ok(bundles.make(["true"]))  # checks: warm
        start_and_wait(session, paths.cid)
        assert paths.exit_file.read_bytes() == b"0"
    finally:
        launcher.cleanup()
        server.stop()
    assert not path.exists()  # a clean stop removes the server's own socket


def test_a_second_server_on_the_same_socket_refuses_to_start(server: WarmServer) -> None:
    res = subprocess.run([sys.executable, "-m", "pymon.server", "--socket", str(server.socket)],
                         capture_output=True, timeout=30)
    assert res.returncode != 0
    assert b"already listening" in res.stderr
    assert server.proc.poll() is None  # type: ignore[union-attr]


def test_hostile_requests_are_refused_and_harm_nothing(bundles: Bundles, warm: Launcher,
                                                       server: WarmServer) -> None:
    tr, tw = token_pipe()
    try:
        kind, _, why = raw_request(server.socket, b"\x00garbage\xff" * 100, token=tr)
        assert kind == handover.REFUSED and "malformed" in why
        # taken before the checks (handover.py): the launcher, refused, runs cold
        with pytest.raises(BlockingIOError):
            os.read(tr, 1)
    finally:
        os.close(tr)
        os.close(tw)
    r, w = os.pipe()
    try:
        # 252 fds and the token: past the 250 and the token that the server makes room for
        # (CMSG_SPACE rounds that up to a multiple of 8 bytes, so 251 + 1 would still fit)
        kind, _, why = raw_request(server.socket, b"x", [r] * 252)
        assert kind == handover.REFUSED and "more than 250 fds" in why, why
        good = handover.encode_request(VERSION, os.getpid(), [b"pymon"], [], b"/", 0o22,
                                       [r], [], 0, 0, 0, 0)
        kind, _, why = raw_request(server.socket, good, [r, w])
        assert kind == handover.REFUSED and "2 came" in why, why
        kind, _, why = raw_request(server.socket, good, [], token=-1)
        assert kind == handover.REFUSED and "no token" in why, why
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as not_a_pipe:
            kind, _, why = raw_request(server.socket, good, [r], token=not_a_pipe.fileno())
        assert kind == handover.REFUSED and "not a pipe" in why, why
        wrong_pid = handover.encode_request(VERSION, 1, [b"pymon"], [], b"/", 0o22, [r], [],
                                            0, 0, 0, 0)
        kind, _, why = raw_request(server.socket, wrong_pid, [r])
        assert kind == handover.REFUSED and "says pid 1" in why, why
        # A valid request whose token cannot be taken forks nothing: its write end (the
        # launcher's mistake), or an empty pipe (the launcher took it at its deadline)
        kind, _, why = raw_request(server.socket, good, [r], token=w)
        assert kind == handover.REFUSED and "token cannot be read" in why, why
        empty_r, empty_w = token_pipe(full=False)
        try:
            kind, _, why = raw_request(server.socket, good, [r], token=empty_r)
        finally:
            os.close(empty_r)
            os.close(empty_w)
        assert kind == handover.REFUSED and "ran cold first" in why, why
        assert not monitors_of(server.pid)  # and no monitor was forked for any of them
    finally:
        os.close(r)
        os.close(w)
    # a client that connects and says nothing holds nothing up
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    silent.connect(str(server.socket))
    try:
        session, paths = warm.create_ok(bundles.make(["echo", "still fine"]))
        start_and_wait(session, paths.cid)
        assert paths.exit_file.read_bytes() == b"0"
    finally:
        silent.close()
    assert server.proc.poll() is None  # type: ignore[union-attr]
    server.wait_for(b"refused: malformed request")


def as_nobody(fn) -> bytes:  # type: ignore[no-untyped-def]
    """Run fn() in a child process with uid/gid 65534; returns what it wrote to a pipe."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            os.write(w, fn())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        out = f.read()
    os.waitpid(pid, 0)
    return out


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory other users may traverse (pytest's tmp_path is root's only)."""
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="pymon-uid-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_other_users_cannot_reach_the_server(public_dir: Path) -> None:
    """The socket is its user's only; opened up by mistake, the peer check still refuses,
    and a launcher of another user runs cold."""
    server = WarmServer(public_dir / "srv" / "server.sock")
    try:
        _other_users(server)
    finally:
        server.stop()


def _other_users(server: WarmServer) -> None:
    assert (server.socket.stat().st_mode & 0o777) == 0o600
    assert (server.socket.parent.stat().st_mode & 0o777) == 0o700

    def connect() -> bytes:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
                s.connect(str(server.socket))
        except OSError as e:
            return str(e.errno).encode()
        return b"connected"

    assert as_nobody(connect) == str(__import__("errno").EACCES).encode()
    os.chmod(server.socket.parent, 0o755)
    os.chmod(server.socket, 0o666)

    def ask() -> bytes:
        req = handover.encode_request("0.1.0", os.getpid(), [b"pymon"], [], b"/", 0o22, [],
                                      [], 0, 0, 0, 0)
        return repr(raw_request(server.socket, req)).encode()

    assert b"peer uid 65534 is not the server's (0)" in as_nobody(ask)
    # a launcher run by that user: refused, so cold, and it still works
    env = dict(os.environ, PYMON_SOCKET=str(server.socket), PYMON_SERVER_BUDGET_MS="5000")
    res = subprocess.run([sys.executable, "-m", "pymon", "--version", "--log-level", "debug"],
                         capture_output=True, env=env, user=65534, group=65534, timeout=30,
                         cwd="/")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(b"conmon version")
    assert server.proc.poll() is None  # type: ignore[union-attr]


def test_50_launches_at_once(bundles: Bundles, warm: Launcher) -> None:
    sessions = []
    for _ in range(50):
        bundle = bundles.make(["true"])
        sessions.append(warm.create(bundle, send_start=False))
    for session, _ in sessions:
        session.send_start()
    for session, paths in sessions:
        assert session.wait_p0(timeout=60) == 0, session.p0_stderr
        assert json.loads(session.read_sync(timeout=60))["data"] > 0
        warm.check_mode(session)
    for session, paths in sessions:
        runc_start(paths.cid)
    for session, paths in sessions:
        session.wait_monitor(timeout=60)
        assert paths.exit_file.read_bytes() == b"0"


def test_upgrade_under_a_running_server(bundles: Bundles, tmp_path: Path) -> None:
    """Code changed on disk: the old server refuses (the launcher runs cold) and exits."""
    import pymon

    copy = tmp_path / "site"
    shutil.copytree(Path(pymon.__file__).parent, copy / "pymon",
                    ignore=shutil.ignore_patterns("__pycache__"))
    env = dict(os.environ, PYTHONPATH=str(copy))
    server = WarmServer(tmp_path / "up" / "server.sock", env=env)
    launcher = Launcher(tmp_path, server)
    try:
        session, paths = launcher.create_ok(bundles.make(["true"]), env=env)
        start_and_wait(session, paths.cid)
        with open(copy / "pymon" / "sync.py", "a") as f:
            f.write("# upgraded\n")
        session, paths = launcher.create(bundles.make(["true"]), env=env)
        assert session.wait_p0() == 0, session.p0_stderr
        assert json.loads(session.read_sync())["data"] > 0
        assert ppid(session.monitor_pid) != server.pid  # cold
        start_and_wait(session, paths.cid)
        assert paths.exit_file.read_bytes() == b"0"
        assert server.proc.wait(timeout=10) == 0  # type: ignore[union-attr]
        assert b"server code changed since it started" in server.wait_for(b"stopped")
        assert not server.socket.exists()
    finally:
        launcher.cleanup()
        server.stop()


def test_sync_mode_waits_and_forwards_signals(bundles: Bundles, launcher: Launcher) -> None:
    """--sync (CRI-O's ExecSync shape): the launcher stays until the monitor exits, exits
    with its status, and a SIGTERM sent to it reaches the container."""
    bundle = bundles.make(["sh", "-c", ("trap 'echo got-term; exit 9' TERM; echo ready; "
                                        "while :; do sleep 0.05; done")])
    session, paths = launcher.create(bundle, "--sync")
    assert json.loads(session.read_sync())["data"] > 0
    runc_start(paths.cid)
    wait_for(lambda: b"ready" in paths.log.read_bytes(), what="the container's first line")
    assert session.p0.poll() is None  # still there
    session.p0.send_signal(signal.SIGTERM)
    assert session.wait_p0(timeout=20) == 9
    assert paths.exit_file.read_bytes() == b"9"
    assert b"got-term" in paths.log.read_bytes()


def test_a_server_that_does_not_answer_costs_the_budget_only(bundles: Bundles,
                                                              tmp_path: Path) -> None:
    """Listening but never accepting: the launcher gives up after its budget (2 ms by
    default) and runs cold."""
    path = tmp_path / "mute.sock"
    mute = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    mute.bind(str(path))
    mute.listen(8)
    launcher = Launcher(tmp_path, None)
    try:
        session, paths = launcher.create(bundles.make(["true"]),
                                         env=dict(os.environ, PYMON_SOCKET=str(path)))
        assert session.wait_p0() == 0, session.p0_stderr
        assert json.loads(session.read_sync())["data"] > 0
        start_and_wait(session, paths.cid)
        assert paths.exit_file.read_bytes() == b"0"
    finally:
        launcher.cleanup()
        mute.close()


def test_cgroup_join_failure_reaches_the_engine(bundles: Bundles, warm: Launcher,
                                                tmp_path: Path) -> None:
    """A request that cannot be honoured after the fork: the launcher sits in a cgroup of a
    hierarchy that is mounted nowhere, so the monitor cannot join it. P0 exits 0, the
    reason is on the sync pipe, the monitor exits 1 and nothing is left running."""
    mnt = tmp_path / "cg"
    mnt.mkdir()
    # One name for every run: this kernel keeps a named v1 hierarchy after its last
    # umount, and another name each run left one more in every process's /proc/PID/cgroup
    name = "pymontest"
    sub = mnt / ("sub-" + os.urandom(3).hex())
    subprocess.run(["mount", "-t", "cgroup", "-o", f"none,name={name}", "cgroup", str(mnt)],
                   check=True)
    mounted = True
    try:
        sub.mkdir()
        session, paths = warm.create(bundles.make(["true"]), send_start=False)
        (sub / "cgroup.procs").write_text(str(session.p0.pid))
        subprocess.run(["umount", str(mnt)], check=True)
        mounted = False
        session.send_start()
        assert session.wait_p0() == 0, session.p0_stderr
        msg = json.loads(session.read_sync())
        assert msg["data"] == -1
        assert f"Failed to join the launcher's cgroups: no mount for cgroup hierarchy name={name}" \
            in msg["message"]
        session.wait_monitor()
        assert not paths.exit_file.exists()
        assert subprocess.run([RUNC, "state", paths.cid], capture_output=True).returncode != 0
    finally:
        if not mounted:
            subprocess.run(["mount", "-t", "cgroup", "-o", f"none,name={name}", "cgroup",
                            str(mnt)], check=True)
        try:
            sub.rmdir()
        except OSError:
            pass
        subprocess.run(["umount", str(mnt)], check=True)


RECORDING_RUNTIME = """#!/bin/sh
# runc, after writing down the process it was started as: what a monitor hands its runtime
case " $* " in
*" create "*)
    {{
        echo "== env"; env | grep -v '^PYMON_' | sort
        echo "== cwd"; pwd
        echo "== umask"; umask
        # read by the shell itself: while it forks a command such as grep, dash blocks
        # every signal, and the command could read that passing mask from /proc/$$
        echo "== status"
        while IFS= read -r line; do
            case $line in
            SigBlk:*|SigIgn:*|Cap*|NoNewPrivs:*|Groups:*|Uid:*|Gid:*)
                echo "$line";;
            esac
        done < /proc/$$/status
        echo "== limits"; cat /proc/$$/limits
        echo "== oom"; cat /proc/$$/oom_score_adj
        echo "== nice"; cut -d' ' -f19 /proc/$$/stat
        echo "== cgroup"; cat /proc/$$/cgroup
        # a glob, not `ls | ...`: a pipeline's pipe would show among the shell's fds
        echo "== fds"; for f in /proc/$$/fd/*; do printf '%s ' "${{f##*/}}"; done; echo
        sid=$(cut -d' ' -f6 /proc/$$/stat)
        echo "== session"; [ "$sid" = "$PPID" ] && echo "M leads the session" || echo "other"
    }} > "{out}.$1$$"
    ;;
esac
exec {runc} "$@"
"""


def test_warm_and_cold_monitors_give_the_runtime_the_same_process(bundles: Bundles, tmp_path: Path,
                                                                  server: WarmServer) -> None:
    """Indistinguishable: the same launch, cold and then warm, with the launcher moved into
    a cgroup before the start byte as podman does, and an extra engine fd, an odd umask,
    cwd, nice value and rlimit; the runtime sees the same environment, cwd, umask, signal
    state, capabilities, limits, oom_score_adj, nice value, cgroups, fd numbers and session."""
    out = tmp_path / "seen"
    rt = tmp_path / "recording-runc"
    rt.write_text(RECORDING_RUNTIME.format(out=out, runc=RUNC))
    rt.chmod(0o755)
    cg = Path("/sys/fs/cgroup/pids") / f"pymon-test-{os.getpid()}"
    cg.mkdir()
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    extra_r, extra_w = os.pipe()
    seen = {}
    try:
        for mode, srv in (("cold", None), ("warm", server)):
            launcher = Launcher(tmp_path, srv)
            try:
                # and two signals ignored (not pymon's strays, which the runtime never
                # inherits ignored): a warm monitor changes just the dispositions that
                # differ from the server's (twin._signal_state)
                wrapper = ["sh", "-c", ("trap '' TTOU TSTP; umask 027; ulimit -n 2000; "
                                        'exec nice -n 3 "$@"'), "sh"]
                session, paths = launcher.create(
                    bundles.make(["true"]), runtime=str(rt), send_start=False,
                    extra_fds=[extra_r], cwd=str(workdir), wrapper=wrapper)
                wait_for(lambda p0=session.p0: p0.pid and Path(f"/proc/{p0.pid}/cmdline")
                         .read_bytes().find(b"pymon") >= 0, what="the launcher running")
                (cg / "cgroup.procs").write_text(str(session.p0.pid))  # what podman does
                session.send_start()
                assert session.wait_p0() == 0, session.p0_stderr
                assert json.loads(session.read_sync())["data"] > 0
                if srv is not None:
                    assert ppid(session.monitor_pid) == srv.pid
                start_and_wait(session, paths.cid)
                assert paths.exit_file.read_bytes() == b"0"
                [record] = list(tmp_path.glob("seen.--*")) or list(tmp_path.glob("seen.*"))
                seen[mode] = record.read_text()
                record.unlink()
            finally:
                launcher.cleanup()
    finally:
        os.close(extra_r)
        os.close(extra_w)
        cg.rmdir()
    assert f"/pymon-test-{os.getpid()}" in seen["cold"]
    assert "M leads the session" in seen["cold"]
    assert f" {extra_r} " in seen["cold"].partition("== fds")[2]  # the engine's extra fd
    ignored = int(seen["cold"].partition("SigIgn:")[2].split()[0], 16)
    assert ignored >> (signal.SIGTTOU - 1) & 1 and ignored >> (signal.SIGTSTP - 1) & 1
    assert seen["warm"] == seen["cold"]


def test_refused_after_the_token_runs_cold(bundles: Bundles, warm: Launcher,
                                           server: WarmServer) -> None:
    """The server takes a launcher's token before it checks the peer (handover.py); a
    peer it then refuses (here: in another UTS namespace) is told so and runs cold, with
    its container as it should be, and the server forks nothing for it."""
    before = set(monitors_of(server.pid))
    bundle = bundles.make(["echo", "cold after all"])
    session, paths = warm.create(bundle, wrapper=["unshare", "--uts"])
    assert session.wait_p0() == 0, session.p0_stderr
    assert json.loads(session.read_sync())["data"] > 0
    assert ppid(session.monitor_pid) != server.pid
    assert set(monitors_of(server.pid)) <= before
    server.wait_for(b"refused: peer is in another uts namespace")
    start_and_wait(session, paths.cid)
    assert paths.exit_file.read_bytes() == b"0"
    assert b"cold after all" in paths.log.read_bytes()


def test_a_launch_is_handed_to_the_spare(bundles: Bundles, warm: Launcher,
                                         server: WarmServer) -> None:
    """The server forks its next monitor ahead (pymon/server/spare.py): a launch is handed
    to that spare, which becomes its monitor as a forked one would. The next spare comes
    once the server is quiet; one killed unused is replaced, launches are forked meanwhile;
    an idle spare is nobody's monitor and dies with the server."""
    spare = wait_for_spare(server.pid)
    session, paths = warm.create(bundles.make(["echo", "handed"]))
    assert session.wait_p0() == 0, session.p0_stderr
    assert json.loads(session.read_sync())["data"] > 0
    assert session.monitor_pid == spare
    assert comm_of(spare) not in (None, SPARE_COMM)  # its launcher's name now, as cold
    start_and_wait(session, paths.cid)
    assert paths.exit_file.read_bytes() == b"0"
    assert b"handed" in paths.log.read_bytes()

    unused = wait_for_spare(server.pid, other_than=spare)
    os.kill(unused, signal.SIGKILL)
    server.wait_for(f"spare {unused} died unused".encode())
    session, paths = warm.create(bundles.make(["echo", "forked"]))
    assert session.wait_p0() == 0, session.p0_stderr
    assert json.loads(session.read_sync())["data"] > 0
    assert ppid(session.monitor_pid) == server.pid  # warm all the same
    start_and_wait(session, paths.cid)
    assert b"forked" in paths.log.read_bytes()

    last = wait_for_spare(server.pid, other_than=unused)  # after SPARE_RETRY (1 s)
    assert server.proc is not None
    server.proc.kill()
    wait_pid_gone(last, 10)


def test_no_spare_is_forked_while_a_launch_is_starting(bundles: Bundles, warm: Launcher,
                                                       server: WarmServer,
                                                       tmp_path: Path) -> None:
    """A spare forked beside a runtime's `create` takes CPU from it (serve.STARTING_MAX):
    the next spare waits until the monitor has registered its container, however quiet
    the server is meanwhile. Here `create` waits at a gate the test holds."""
    first = wait_for_spare(server.pid)
    gate = tmp_path / "runc.gate"
    os.mkfifo(gate)
    runtime = tmp_path / "runc"
    runtime.write_text(f'#!/bin/sh\ncase " $* " in *" create "*) : < "{gate}" ;; esac\n'
                       f'exec {RUNC} "$@"\n')
    runtime.chmod(0o755)
    session, paths = warm.create(bundles.make(["true"]), runtime=str(runtime))
    assert session.wait_p0() == 0, session.p0_stderr
    assert session.monitor_pid == first
    # `create` is at the gate, the server has nothing to do: without the hold, the next
    # spare would be forked after serve.SPARE_QUIET (20 ms). Watched for ten times that
    # (a fork fails the test as soon as the server says it), then the gate opens.
    with server.changed:
        assert not server.changed.wait_for(lambda: server.log.count(b"forked spare") > 1,
                                           0.2), server.log.decode()
    os.close(os.open(gate, os.O_WRONLY))  # opens once `create` reads; EOF: it goes on
    assert json.loads(session.read_sync())["data"] > 0
    registered = f"monitor {first} registered container".encode()
    server.wait_for(registered)
    second = wait_for_spare(server.pid, other_than=first)
    log = server.wait_for(f"forked spare {second}".encode())
    assert log.index(registered) < log.index(f"forked spare {second}".encode()), log.decode()
    assert log.count(b"forked spare") == 2, log.decode()  # the first, then this one
    start_and_wait(session, paths.cid)
    assert paths.exit_file.read_bytes() == b"0"
