"""The compiled launcher (pymon/launcher/pymon_launch.c) against a scripted fake server.

Warm path: the request is what handover.encode_request makes of the launcher process as
/proc shows it while it waits, and the server's decoder accepts it; the fds arrive; the
replies end the launcher as specified. Cold path: a refusal, or no taker for the token
within the budget, execs the interpreter with the environment and fds untouched. Most
tests use a launcher whose interpreter is a fake that prints what it was given; one runs
the real cold pymon.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import signal
import socket
import stat
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pymon import handover
from pymon.cli import VERSION
from pymon.entrypoint import import_roots, write
from pymon.entrypoint import main as main_entrypoint
from pymon.launcher import build as build_mod
from pymon.launcher import client
from pymon.launcher.build import SOURCE, build, compiler, dynamic, links
from pymon.launcher.program import bootstrap
from tests.fakes.fake_server import TIMEOUT, FakeServer, Received

pytestmark = [pytest.mark.skipif(compiler() is None, reason="no C compiler (sysconfig CC, cc)"),
              pytest.mark.timeout(60)]

ROOTS = ["/nonexistent/root-a", "/nonexistent/root 'b'"]
# The fake interpreter: prints what the launcher exec'd it with, as JSON on stdout.
FAKE_PYTHON = r"""\
import json, os, sys
fds = []
for name in os.listdir("/proc/self/fd"):
    try:
        os.fstat(int(name))  # listdir's own fd is closed by now
    except OSError:
        continue
    fds.append(int(name))
mask = os.umask(0)
# the environment as exec'd (Python's locale coercion may have added LC_CTYPE since)
with open("/proc/self/environ", "rb") as f:
    env = dict(e.decode().split("=", 1) for e in f.read().split(b"\0")[:-1])
json.dump({"argv": sys.argv, "env": env,
           "fds": sorted(fds), "cwd": os.getcwd(), "umask": mask}, sys.stdout)
"""


@pytest.fixture(scope="module")
def fake_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("python") / "python3"
    path.write_text(f"#!{sys.executable} -IS\n{FAKE_PYTHON}")
    path.chmod(0o755)
    return str(path)


@pytest.fixture(scope="module")
def launcher(tmp_path_factory: pytest.TempPathFactory, fake_python: str) -> str:
    """Built with -Werror: the source stays -Wall -Wextra clean."""
    dest = str(tmp_path_factory.mktemp("bin") / "pymon")
    assert build(dest, fake_python, ROOTS, extra_flags=("-Werror",))
    return dest


@pytest.fixture
def server(tmp_path: Path) -> Iterator[FakeServer]:
    srv = FakeServer(str(tmp_path / "server.sock"))
    yield srv
    srv.close()


# Puts fds at chosen numbers, then execs the launcher with the environment as given to it
# (read back from /proc: Python's locale coercion may have changed os.environ).
EXEC_WITH_FDS = r"""
import json, os, sys
for target, source in json.loads(sys.argv[1]).items():
    os.dup2(source, int(target))
for source in set(json.loads(sys.argv[1]).values()) - {int(t) for t in json.loads(sys.argv[1])}:
    os.close(source)
with open("/proc/self/environ", "rb") as f:
    env = dict(e.split(b"=", 1) for e in f.read().split(b"\0")[:-1])
os.execve(sys.argv[2], sys.argv[2:], env)
"""


# launcher pid -> the launcher binary it runs (the cold path's program names it)
BINARY_OF: dict[int, str] = {}


class Launches:
    """Starts launchers; kills whatever is still running at the end of the test."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.procs: list[subprocess.Popen[bytes]] = []

    def __call__(self, cmd: list[str], env: dict[str, str] | None = None,
                 fds: dict[int, int] | None = None,
                 **kwargs: object) -> subprocess.Popen[bytes]:
        """`fds`: {number in the launcher: our fd}; nothing else but 0, 1, 2 is passed."""
        binary = cmd[0]
        if fds:
            cmd = [sys.executable, "-IS", "-c", EXEC_WITH_FDS, json.dumps(fds), *cmd]
            kwargs["pass_fds"] = tuple(set(fds.values()))
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, **kwargs)  # type: ignore[call-overload]
        self.procs.append(proc)
        BINARY_OF[proc.pid] = binary
        return proc

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for f in (proc.stdout, proc.stderr):
                if f:
                    f.close()


@pytest.fixture
def launch(launcher: str) -> Iterator[Launches]:
    launches = Launches(launcher)
    yield launches
    launches.kill_all()


def env_for(server: FakeServer | str, **extra: str) -> dict[str, str]:
    path = server.path if isinstance(server, FakeServer) else server
    # a generous budget where the test itself answers: on a loaded machine the test's
    # own steps may take longer than 2 ms (the default is tested on its own)
    env = {"PATH": "/usr/bin:/bin", "PYMON_SOCKET": path, "PYMON_SERVER_BUDGET_MS": "10000"}
    env.update(extra)
    return env


def finish(proc: subprocess.Popen[bytes]) -> tuple[int, bytes, bytes]:
    out, err = proc.communicate(timeout=TIMEOUT)
    return proc.returncode, out, err


def cold_report(out: bytes) -> dict[str, object]:
    report: dict[str, object] = json.loads(out)
    return report


# ---- the request ---------------------------------------------------------------------------


def proc_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


def test_request_describes_the_launcher(launch: Launches, server: FakeServer,
                                        tmp_path: Path) -> None:
    """Everything in the request is what the launcher process really had, byte for byte
    as handover.encode_request writes it, and its fds arrive (a pipe at fd 7)."""
    workdir = tmp_path / "work dir"
    workdir.mkdir()
    rd, wr = os.pipe()

    def child_setup() -> None:
        os.umask(0o027)
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(1000, hard), hard))
        resource.setrlimit(resource.RLIMIT_CORE, (0, resource.RLIM_INFINITY))
        os.nice(3)
        Path("/proc/self/oom_score_adj").write_text("500")
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1, signal.SIGTTIN})
        signal.signal(signal.SIGUSR2, signal.SIG_IGN)

    env = env_for(server, ODD="caf\xe9 \u2603", EMPTY="")
    env_b = {k.encode(): v.encode() for k, v in env.items()}
    env_b[b"RAW"] = b"\xff\xfe not utf-8"
    args = ["--cid", "abc", "--log-level", "info", "two words", ""]
    try:
        proc = launch([launch.binary, *args], env=env_b, fds={7: rd},  # type: ignore[arg-type]
                      cwd=workdir, preexec_fn=child_setup)
        got = server.accept()
    finally:
        os.close(rd)
    try:
        pid = proc.pid
        req = got.request
        status = proc_status(pid)
        # the launcher waits for our answer, so /proc shows the state it described; its
        # own socket, its token's read end and its signalfd are the fds it did not pass
        token = os.fstat(got.token)

        def its_own(fd: int) -> bool:
            st = os.stat(f"/proc/{pid}/fd/{fd}")
            return (stat.S_ISSOCK(st.st_mode) or (st.st_dev, st.st_ino) == (token.st_dev,
                                                                            token.st_ino)
                    or os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:[signalfd]")

        listed = sorted(int(n) for n in os.listdir(f"/proc/{pid}/fd"))
        passed = [fd for fd in listed if not its_own(fd)]
        assert len(listed) == len(passed) + 3
        assert req.fds == passed and 7 in passed and passed[:3] == [0, 1, 2]
        for number, ours in zip(req.fds, got.fds):
            theirs = os.stat(f"/proc/{pid}/fd/{number}")
            assert (os.fstat(ours).st_dev, os.fstat(ours).st_ino) == (theirs.st_dev,
                                                                      theirs.st_ino)
        pipe_end = got.fds[req.fds.index(7)]
        os.write(wr, b"through")
        assert os.read(pipe_end, 16) == b"through"
        got.drop_fds()

        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")[:-1]
        cwd = os.readlink(f"/proc/{pid}/cwd").encode()
        rlimits = []
        for r in range(handover.RLIMIT_COUNT):
            soft, hard = resource.prlimit(pid, r)
            rlimits.append((r, -1 if soft == resource.RLIM_INFINITY else soft,
                            -1 if hard == resource.RLIM_INFINITY else hard))
        # While it waits the launcher also blocks the signals it forwards (queued for the
        # monitor); the request has the mask it was given: ours
        forwarded = sum(1 << (sig - 1) for sig in client.FORWARDED)
        blocked_now = int(status["SigBlk"], 16)
        assert blocked_now & forwarded == forwarded
        given = blocked_now & ~forwarded | 1 << (signal.SIGUSR1 - 1)
        expected = handover.encode_request(
            VERSION, pid, argv, environ, cwd, int(status["Umask"], 8), passed, rlimits,
            int(Path(f"/proc/{pid}/oom_score_adj").read_text()),
            given, int(status["SigIgn"], 16), os.getpriority(os.PRIO_PROCESS, pid))
        assert got.raw == expected
        # and the values are the ones the test set, not just consistent
        assert req.pid == pid and req.version == VERSION
        assert req.argv == [launch.binary.encode(), *(a.encode() for a in args)]
        assert b"RAW=\xff\xfe not utf-8" in req.env and "ODD=caf\xe9 \u2603".encode() in req.env
        assert req.cwd == str(workdir).encode() and req.umask == 0o027
        assert req.nice == os.getpriority(os.PRIO_PROCESS, 0) + 3 or req.nice == 19
        assert req.oom_score_adj == 500
        assert req.sig_blocked & (1 << (signal.SIGUSR1 - 1))
        assert req.sig_blocked & (1 << (signal.SIGTTIN - 1))
        assert not req.sig_blocked & (1 << (signal.SIGTERM - 1))
        assert req.sig_ignored & (1 << (signal.SIGUSR2 - 1))
        limits = {lim.resource: (lim.soft, lim.hard) for lim in req.rlimits}
        assert limits[resource.RLIMIT_CORE] == (0, -1)
        assert limits[resource.RLIMIT_NOFILE][0] <= 1000

        got.take_token()
        got.reply(handover.EXITED, 0)
        assert finish(proc) == (0, b"", b"")
    finally:
        os.close(wr)
        got.close()


# ---- once the server has taken the token -------------------------------------------------


def handshake(launch: Launches, server: FakeServer, args: list[str],
              **kwargs: object) -> tuple[subprocess.Popen[bytes], Received]:
    proc = launch([launch.binary, *args], env=env_for(server), **kwargs)
    got = server.accept()
    got.drop_fds()
    got.take_token()
    return proc, got


def test_detached_writes_the_pidfile(launch: Launches, server: FakeServer,
                                     tmp_path: Path) -> None:
    pidfile = tmp_path / "conmon.pid"
    proc, got = handshake(launch, server, ["--conmon-pidfile", str(pidfile)],
                          preexec_fn=lambda: os.umask(0o022))
    got.reply(handover.DETACHED, 31337, str(pidfile))
    assert finish(proc) == (0, b"", b"")
    got.close()
    assert pidfile.read_text() == "31337"
    assert stat.S_IMODE(pidfile.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["conmon.pid", "server.sock"]


def test_detached_without_pidfile(launch: Launches, server: FakeServer, tmp_path: Path) -> None:
    proc, got = handshake(launch, server, [])
    got.reply(handover.DETACHED, 31337, "")
    assert finish(proc) == (0, b"", b"")
    got.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["server.sock"]


def test_pidfile_failure_kills_the_monitor(launch: Launches, server: FakeServer,
                                           tmp_path: Path) -> None:
    monitor = subprocess.Popen(["sleep", "60"])
    try:
        proc, got = handshake(launch, server, [])
        got.reply(handover.DETACHED, monitor.pid, str(tmp_path / "missing" / "conmon.pid"))
        assert finish(proc) == (
            1, b"", b"[conmon:e]: Failed to write conmon pidfile: No such file or directory\n")
        got.close()
        assert monitor.wait(timeout=TIMEOUT) == -signal.SIGKILL
    finally:
        monitor.kill()
        monitor.wait()


# x86_64's poll(2): what the committed launcher waits in, where the budget's wait is ppoll
SYS_POLL = "7"


def syscall_of(pid: int) -> str:
    """The number of the system call `pid` is blocked in (/proc/PID/syscall)."""
    return Path(f"/proc/{pid}/syscall").read_text().split()[0]


@pytest.mark.skipif(platform.machine() != "x86_64",
                    reason="tells poll from ppoll by x86_64's syscall numbers")
def test_a_taken_token_commits_without_a_message(launch: Launches, server: FakeServer,
                                                tmp_path: Path) -> None:
    """The server commits the launcher by taking its token, with nothing to say: past
    its budget the launcher finds the token gone and waits for the monitor (polling the
    connection alone, not the budget's ppoll), and writes the pid that comes with
    "detached"."""
    pidfile = tmp_path / "conmon.pid"
    env = dict(env_for(server), PYMON_SERVER_BUDGET_MS="500")
    proc = launch([launch.binary, "--conmon-pidfile", str(pidfile)], env=env)
    got = server.accept()
    got.drop_fds()
    got.take_token()
    deadline = time.monotonic() + TIMEOUT
    while syscall_of(proc.pid) != SYS_POLL:  # the budget's wait is ppoll
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    got.reply(handover.DETACHED, 31337, str(pidfile))
    assert finish(proc) == (0, b"", b"")
    got.close()
    assert pidfile.read_text() == "31337"


def test_a_taken_token_then_nothing_is_an_error(launch: Launches, server: FakeServer) -> None:
    """Committed, and the connection closes before the monitor said anything: it may
    have read the start pipe, so the launcher fails rather than run cold."""
    proc = launch([launch.binary], env=env_for(server))
    got = server.accept()
    got.drop_fds()
    got.take_token()
    got.close()
    assert finish(proc) == (
        1, b"", b"[conmon:e]: the monitor ended before reporting its state\n")


def test_refused_after_the_token_was_taken_runs_cold(launch: Launches,
                                                     server: FakeServer) -> None:
    """The server took the token and then could not fork: "refused" still means that no
    monitor exists, so the cold path runs."""
    env = env_for(server)
    proc = launch([launch.binary, *DEBUG], env=env)
    got = server.accept()
    got.drop_fds()
    got.take_token()
    got.reply(handover.REFUSED, 0, "fork failed: Resource temporarily unavailable")
    assert_cold(proc, DEBUG, env, "refused: fork failed: Resource temporarily unavailable")
    got.close()


# The engine: sets the signal state (argv[1]: signals to block, argv[2]: to ignore), writes
# it as /proc shows it to the file argv[3], and execs the launcher (argv[4:]).
ENGINE_WITH_SIGNALS = r"""
import os, signal, sys
for sig in (signal.SIGPIPE, signal.SIGXFSZ):  # ignored by Python itself at start-up
    signal.signal(sig, signal.SIG_DFL)
signal.pthread_sigmask(signal.SIG_BLOCK, [int(s) for s in sys.argv[1].split()])
for sig in sys.argv[2].split():
    signal.signal(int(sig), signal.SIG_IGN)
with open("/proc/self/status") as f, open(sys.argv[3], "w") as out:
    out.writelines(line for line in f if line.startswith(("SigBlk:", "SigIgn:")))
os.execv(sys.argv[4], sys.argv[4:])
"""


def test_refused_after_the_token_the_cold_path_has_the_engines_signal_state(
        tmp_path: Path, server: FakeServer) -> None:
    """By the time the server takes the token, the launcher has blocked the signals it
    forwards and ignores SIGPIPE; a refusal after that must give the cold monitor the
    engine's signal state back, all of it: the mask with the signals the C library keeps
    for itself (musl's sigprocmask leaves 32-34 out of the old mask it reports), SIGPIPE's
    disposition. The interpreter here is `grep`, which prints the state it was exec'd
    with."""
    fake = tmp_path / "python3"
    fake.write_text("#!/bin/sh\nexec grep -E '^Sig(Blk|Ign):' /proc/self/status\n")
    fake.chmod(0o755)
    binary = str(tmp_path / "pymon")
    assert build(binary, str(fake), ROOTS)
    engine_state = tmp_path / "engine"
    proc = subprocess.Popen(
        [sys.executable, "-IS", "-c", ENGINE_WITH_SIGNALS, f"34 {int(signal.SIGUSR2)}",
         str(int(signal.SIGHUP)), str(engine_state), binary, *DEBUG],
        env=env_for(server), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        got = server.accept()
        got.drop_fds()
        got.take_token()
        got.reply(handover.REFUSED, 0, "fork failed")
        status, out, err = finish(proc)
        got.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert status == 0, err
    assert out.decode() == engine_state.read_text()
    blocked = int(out.decode().split()[1], 16)
    assert blocked & (1 << 33) and blocked & (1 << (signal.SIGUSR2 - 1))


# The fake monitor of --sync: reports each signal it gets on stdout, ends on SIGTERM.
SIGNAL_REPORTER = """\
import os, signal, sys
def report(sig, frame):
    os.write(1, b"%d\\n" % sig)
    if sig == signal.SIGTERM:
        sys.exit(0)
for s in (signal.SIGUSR1, signal.SIGWINCH, signal.SIGCONT, signal.SIGTERM):
    signal.signal(s, report)
os.write(1, b"ready\\n")
while True:
    signal.pause()
"""


def test_sync_forwards_signals_and_exits_with_the_status(launch: Launches,
                                                         server: FakeServer) -> None:
    monitor = subprocess.Popen([sys.executable, "-IS", "-c", SIGNAL_REPORTER],
                               stdout=subprocess.PIPE)
    try:
        assert monitor.stdout is not None
        assert monitor.stdout.readline() == b"ready\n"
        proc, got = handshake(launch, server, ["--sync"])
        got.reply(handover.RUNNING, monitor.pid)
        # sent right away: signals that arrive before "running" is read are queued, not lost
        for sig in (signal.SIGUSR1, signal.SIGWINCH, signal.SIGTERM):
            proc.send_signal(sig)
            assert monitor.stdout.readline() == b"%d\n" % sig
        assert monitor.wait(timeout=TIMEOUT) == 0
        assert proc.poll() is None  # still waiting for the status
        got.reply(handover.EXITED, 42)
        assert finish(proc) == (42, b"", b"")
        got.close()
    finally:
        monitor.kill()
        monitor.wait()
        if monitor.stdout:
            monitor.stdout.close()


def test_sync_monitor_killed(launch: Launches, server: FakeServer) -> None:
    proc, got = handshake(launch, server, ["--sync"])
    got.reply(handover.RUNNING, 777)
    got.close()
    assert finish(proc) == (
        1, b"", b"[conmon:e]: monitor 777 ended without reporting an exit status\n")


def test_exited_directly(launch: Launches, server: FakeServer) -> None:
    proc, got = handshake(launch, server, ["--bogus"])
    got.reply(handover.EXITED, 3)
    assert finish(proc) == (3, b"", b"")
    got.close()


@pytest.mark.parametrize("reply", [
    b"\x93\xa3odd\x01\xa0", b"\x92\x01\x02", None,
    # pids that kill() would take for our process group (2**32 is 0 as a pid_t): the
    # launcher runs in its own session so that a regression only kills itself
    handover.encode_reply(handover.DETACHED, 0, "/nonexistent/pidfile"),
    handover.encode_reply(handover.DETACHED, 2**32, "/nonexistent/pidfile"),
    handover.encode_reply(handover.RUNNING, 0)])
def test_once_committed_anything_else_is_an_error(launch: Launches, server: FakeServer,
                                            reply: bytes | None) -> None:
    """Committed: an unknown reply, a malformed one, a bad pid or EOF end the launcher
    with an error, never with the cold path (the monitor may have read the start pipe)."""
    proc, got = handshake(launch, server, [], start_new_session=True)
    if reply is not None:
        got.conn.send(reply)
    else:
        got.conn.shutdown(socket.SHUT_RDWR)
    status, out, err = finish(proc)
    got.close()
    assert (status, out) == (1, b"") and err.startswith(b"[conmon:e]: ") and b"monitor" in err


# ---- the cold path -------------------------------------------------------------------------------


def assert_cold(proc: subprocess.Popen[bytes], args: list[str], env: dict[str, str],
                reason: str | None = None, fds: list[int] | None = None) -> None:
    status, out, err = finish(proc)
    assert status == 0, err
    report = cold_report(out)
    fake = report["argv"][0]  # type: ignore[index]
    # argv[0] of the exec is PYTHON (the kernel replaces it with the script's path here)
    program = bootstrap(ROOTS, os.path.abspath(BINARY_OF[proc.pid]))
    assert report["argv"] == [fake, "-IS", "-c", program, *args]
    assert report["env"] == env
    assert report["fds"] == (fds or [0, 1, 2])
    if reason is None:
        assert err == b""
    else:
        assert err == f"[conmon:d]: warm monitor unavailable ({reason}), running cold\n".encode()


DEBUG = ["--cid", "x", "--log-level", "debug"]


def test_refused_runs_cold(launch: Launches, server: FakeServer) -> None:
    env = env_for(server)
    proc = launch([launch.binary, *DEBUG], env=env)
    got = server.accept()
    got.drop_fds()
    got.reply(handover.REFUSED, 0, "busy")
    assert_cold(proc, DEBUG, env, "refused: busy")
    got.close()


def test_no_socket_runs_cold(launch: Launches, tmp_path: Path) -> None:
    path = tmp_path / "missing.sock"
    env = env_for(str(path))
    assert_cold(launch([launch.binary, *DEBUG], env=env), DEBUG, env,
                f"{path}: No such file or directory")


def test_stale_socket_runs_cold(launch: Launches, tmp_path: Path) -> None:
    path = tmp_path / "stale.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.bind(str(path))
    s.close()
    env = env_for(str(path))
    args = ["--log-level=trace"]
    assert_cold(launch([launch.binary, *args], env=env), args, env,
                f"{path}: Connection refused")


def test_empty_socket_variable_means_no_server(launch: Launches) -> None:
    env = {"PYMON_SOCKET": ""}
    assert_cold(launch([launch.binary, *DEBUG], env=env), DEBUG, env,
                "no server socket configured")


def test_silent_server_runs_cold_within_the_budget(launch: Launches,
                                                   server: FakeServer) -> None:
    """The default 2 ms budget: a server that accepts and never answers costs ~2 ms."""
    env = {"PYMON_SOCKET": server.path}
    start = time.monotonic()
    proc = launch([launch.binary, *DEBUG], env=env)
    got = server.accept()  # and say nothing
    got.drop_fds()
    assert_cold(proc, DEBUG, env, "no answer within 2 ms")
    assert time.monotonic() - start < TIMEOUT
    assert not got.token_left()  # the launcher took it: a server reading it now forks nothing
    got.close()


def test_full_backlog_runs_cold(launch: Launches, tmp_path: Path) -> None:
    """A server too busy to accept: connect fails with EAGAIN at once, no waiting."""
    path = tmp_path / "busy.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(str(path))
    listener.listen(0)
    queued = []
    try:
        while True:  # fill the backlog (its size is the kernel's business)
            c = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_NONBLOCK)
            queued.append(c)
            try:
                c.connect(str(path))
            except BlockingIOError:
                break
            assert len(queued) < 100
        env = env_for(str(path))
        assert_cold(launch([launch.binary, *DEBUG], env=env), DEBUG, env,
                    f"{path}: Resource temporarily unavailable")
    finally:
        for c in queued:
            c.close()
        listener.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become another user")
@pytest.mark.parametrize("trailing_slash", [False, True])
def test_other_users_find_the_server_in_xdg_runtime_dir(launch: Launches,
                                                       trailing_slash: bool) -> None:
    """Not root: $XDG_RUNTIME_DIR/pymon/server.sock (joined like os.path.join)."""
    top = Path(tempfile.mkdtemp())
    try:
        top.chmod(0o755)
        (top / "pymon").mkdir(mode=0o755)
        # built here: nobody cannot reach pytest's 0700 tmp directories
        fake = top / "python3"
        fake.write_text(f"#!{sys.executable} -IS\n{FAKE_PYTHON}")
        fake.chmod(0o755)
        binary = top / "launcher"
        assert build(str(binary), str(fake), ROOTS)
        srv = FakeServer(str(top / "pymon" / "server.sock"))
        os.chmod(srv.path, 0o777)

        def become_nobody() -> None:
            os.setgid(65534)
            os.setgroups([])
            os.setuid(65534)

        env = {"XDG_RUNTIME_DIR": str(top) + ("/" if trailing_slash else ""),
               "PYMON_SERVER_BUDGET_MS": "10000"}
        proc = launch([str(binary), *DEBUG], env=env, preexec_fn=become_nobody)
        got = srv.accept()
        got.drop_fds()
        assert got.request.argv[0] == str(binary).encode()
        got.reply(handover.REFUSED, 0, "not yours")
        assert_cold(proc, DEBUG, env, "refused: not yours")
        got.close()
        srv.close()
        proc = launch([str(binary), *DEBUG], env={}, preexec_fn=become_nobody)
        assert_cold(proc, DEBUG, {}, "no server socket configured")
    finally:
        shutil.rmtree(top)


def test_socket_path_too_long_runs_cold(launch: Launches, tmp_path: Path) -> None:
    env = env_for("/" + "x" * 108)
    assert_cold(launch([launch.binary, *DEBUG], env=env), DEBUG, env, "socket path too long")


def test_server_closing_runs_cold(launch: Launches, server: FakeServer) -> None:
    env = env_for(server)
    proc = launch([launch.binary, *DEBUG], env=env)
    got = server.accept()
    got.close()
    assert_cold(proc, DEBUG, env, "the server closed the connection")


def test_malformed_first_reply_runs_cold(launch: Launches, server: FakeServer) -> None:
    env = env_for(server)
    proc = launch([launch.binary, *DEBUG], env=env)
    got = server.accept()
    got.drop_fds()
    got.conn.send(handover.encode_reply(handover.DETACHED, 1) + b"\x00")  # trailing byte
    assert_cold(proc, DEBUG, env, "malformed reply")
    got.close()


def test_quiet_without_debug_and_fds_kept(launch: Launches, tmp_path: Path) -> None:
    """No debug line at other log levels; the cold path gets the fds at their numbers."""
    env = env_for(str(tmp_path / "missing.sock"))
    rd, wr = os.pipe()
    try:
        args = ["--log-level", "info", "--log-level-debug"]
        proc = launch([launch.binary, *args], env=env, fds={7: rd, 12: wr})
        assert_cold(proc, args, env, None, [0, 1, 2, 7, 12])
    finally:
        os.close(rd)
        os.close(wr)


def test_too_many_fds_runs_cold_without_connecting(launch: Launches,
                                                   server: FakeServer) -> None:
    env = env_for(server)
    rd, wr = os.pipe()
    extra = list(range(10, 10 + handover.MAX_FDS))  # with 0, 1, 2: over MAX_FDS
    try:
        proc = launch([launch.binary, *DEBUG], env=env, fds=dict.fromkeys(extra, rd))
        assert_cold(proc, DEBUG, env, "cannot hand over the fds", [0, 1, 2, *extra])
    finally:
        os.close(rd)
        os.close(wr)
    assert not server.pending()


def test_oversized_request_runs_cold_without_connecting(launch: Launches,
                                                        server: FakeServer) -> None:
    env = env_for(server, BIG1="x" * 100_000, BIG2="y" * 100_000)
    proc = launch([launch.binary, *DEBUG], env=env)
    assert_cold(proc, DEBUG, env, "request too large")
    assert not server.pending()


def test_real_cold_path_runs_pymon(launch: Launches, tmp_path: Path) -> None:
    """The bootstrap compiled in is a working cold path: the real pymon answers."""
    dest = str(tmp_path / "pymon")
    assert build(dest, sys.executable, import_roots())
    env = {"PYMON_SOCKET": str(tmp_path / "missing.sock")}
    status, out, err = finish(launch([dest, "--version"], env=env))
    assert status == 0 and out.startswith(b"conmon version "), (out, err)


# ---- building ---------------------------------------------------------------------------------


def test_c_string_survives_any_text(tmp_path: Path) -> None:
    """Roots with quotes, backslashes, non-ASCII and '??' reach the bootstrap intact."""
    roots = ['/a"b', "/c\\d", "/e\u00e9\u2603", "/f??/g", "/h\ti"]
    dest = str(tmp_path / "pymon")
    fake = tmp_path / "python3"
    fake.write_text(f"#!{sys.executable} -IS\n{FAKE_PYTHON}")
    fake.chmod(0o755)
    assert build(dest, str(fake), roots, extra_flags=("-Werror",))
    done = subprocess.run([dest, "x"], env={"PYMON_SOCKET": ""}, capture_output=True,
                          timeout=TIMEOUT, check=True)
    assert json.loads(done.stdout)["argv"][1:] == ["-IS", "-c", bootstrap(roots, dest), "x"]


def test_the_launcher_links_the_first_way_it_can(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Statically against musl where its compiler wrapper is installed (CI installs
    musl-tools), else statically against the C library where its static archive is
    installed, else as usual: each way, forced in turn, links a launcher that runs cold;
    with a link that fails (a flag the linker refuses), the next way is taken."""
    tries = links()
    assert [flags for _, flags in tries][-2:] == [build_mod.STATIC, ()]
    # Debian's musl-tools (on CI): its wrapper and start files are found
    assert (tries[0][0] == [build_mod.MUSL]) == (shutil.which(build_mod.MUSL) is not None)
    fake = tmp_path / "python3"
    fake.write_text(f"#!{sys.executable} -IS\n{FAKE_PYTHON}")
    fake.chmod(0o755)
    probe = tmp_path / "probe.c"
    probe.write_text("int main(void) { return 0; }\n")

    def built(name: str, ways: list[tuple[list[str], tuple[str, ...]]]) -> bytes:
        monkeypatch.setattr(build_mod, "links", lambda: ways)
        dest = str(tmp_path / name)
        assert build(dest, str(fake), ["/r"])
        done = subprocess.run([dest, "x"], env={"PYMON_SOCKET": ""}, capture_output=True,
                              timeout=TIMEOUT, check=True)
        assert json.loads(done.stdout)["argv"][-1] == "x"
        return Path(dest).read_bytes()

    for i, (cc, flags) in enumerate(tries):
        if flags and subprocess.run([*cc, *flags, "-o", str(tmp_path / "probe"), str(probe)],
                                    capture_output=True, timeout=TIMEOUT).returncode:
            assert cc != [build_mod.MUSL]  # its static library comes with the wrapper
            continue  # this C library's static archive is not installed
        data = built(f"way{i}", tries[i:])
        assert dynamic(data) == (flags == ()), (cc, flags)
        if flags:  # static: glibc's start-up is in the binary, or musl's
            assert (b"GLIBC_TUNABLES" in data) == (cc != [build_mod.MUSL]), cc
    failing = ([*tries[0][0], "-Wl,--no-such-flag"], tries[0][1])
    assert dynamic(built("next", [failing, tries[-1]]))
    # musl-gcc's own -static-pie links musl's libc.so: not what was asked, the next is taken
    if tries[0][0] == [build_mod.MUSL]:
        assert dynamic(built("musl-dynamic", [([build_mod.MUSL], build_mod.STATIC), tries[-1]]))
        assert b"GLIBC_2." in (tmp_path / "musl-dynamic").read_bytes()  # glibc's versions


def test_staged_launcher_names_its_installed_path(tmp_path: Path) -> None:
    """A package builds the launcher in a staging directory: the cold monitor's command
    line names the path it is installed at (for ps and pgrep -f), not the build tree."""
    staged = str(tmp_path / "debian" / "pymon" / "pymon")
    os.makedirs(os.path.dirname(staged))
    fake = tmp_path / "python3"
    fake.write_text(f"#!{sys.executable} -IS\n{FAKE_PYTHON}")
    fake.chmod(0o755)
    assert main_entrypoint([staged, "--python", str(fake), "--path", "/r", "--no-compile",
                            "--installed-as", "/usr/libexec/podman/pymon"]) is None
    done = subprocess.run([staged], env={"PYMON_SOCKET": ""}, capture_output=True,
                          timeout=TIMEOUT, check=True)
    program = json.loads(done.stdout)["argv"][3]
    assert program == bootstrap(["/r"], "/usr/libexec/podman/pymon")
    assert program.endswith("  # /usr/libexec/podman/pymon") and str(tmp_path) not in program


def test_entrypoint_builds_the_c_launcher_or_the_script(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    dest = tmp_path / "pymon"
    write(str(dest), compile_=False)
    assert dest.read_bytes()[:4] == b"\x7fELF" and os.access(dest, os.X_OK)
    write(str(dest), compile_=False, python_launcher=True)
    assert dest.read_text().startswith(f"#!{sys.executable} -IS\n")
    assert "from pymon.launcher.main import main\n" in dest.read_text()
    assert capsys.readouterr().err == ""

    broken = tmp_path / "broken.c"
    broken.write_text("this is not C\n")
    monkeypatch.setattr(build_mod, "SOURCE", str(broken))
    dest.unlink()
    write(str(dest), compile_=False)
    assert dest.read_text().startswith("#!")
    err = capsys.readouterr().err
    assert "compiling the C launcher failed" in err and "Python launcher script" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.c", "pymon"]

    # a distribution's flags are used (here: one the compiler rejects)
    monkeypatch.setattr(build_mod, "SOURCE", SOURCE)
    monkeypatch.setenv("CFLAGS", "-O2 -fno-such-option-for-pymon")
    assert not build(str(tmp_path / "other"), sys.executable, [])
    assert "-fno-such-option-for-pymon" in capsys.readouterr().err
    monkeypatch.setenv("CFLAGS", "-O2 -D_FORTIFY_SOURCE=2 -fstack-protector-strong")
    monkeypatch.setenv("LDFLAGS", "-Wl,-z,relro,-z,now")
    assert build(str(tmp_path / "other"), sys.executable, [])
    assert capsys.readouterr().err == ""
    (tmp_path / "other").unlink()

    monkeypatch.setattr(build_mod, "compiler", lambda: None)
    assert not build(str(tmp_path / "other"), sys.executable, [])
    assert "no C compiler" in capsys.readouterr().err


# ---- how fast ------------------------------------------------------------------------------------


def spawn_time(argv: list[str], env: dict[str, str],
               during: Callable[[int], float] | None = None,
               stdout: int | None = None) -> tuple[float, float]:
    """(time to `during`'s event, time to exit) in ms, from just before the spawn."""
    actions = [] if stdout is None else [(os.POSIX_SPAWN_DUP2, stdout, 1)]
    start = time.perf_counter()
    pid = os.posix_spawn(argv[0], argv, env, file_actions=actions)
    mid = during(pid) if during else start
    _, status = os.waitpid(pid, 0)
    end = time.perf_counter()
    assert os.waitstatus_to_exitcode(status) == 0
    return (mid - start) * 1000, (end - start) * 1000


def test_handover_timing(launch: Launches, server: FakeServer,
                         capsys: pytest.CaptureFixture[str]) -> None:
    """Exec -> request at the server, and exec -> exit after "detached", over 200 runs,
    against conmon's own start-up (`conmon --version`) in the same run when installed."""
    env = {"PYMON_SOCKET": server.path, "PYMON_SERVER_BUDGET_MS": "10000"}

    def serve(pid: int) -> float:
        got = server.accept()
        arrived = time.perf_counter()
        assert got.request.pid == pid
        got.take_token()
        got.reply(handover.DETACHED, 4242, "")
        got.close()
        return arrived

    runs = [spawn_time([launch.binary], env, serve) for _ in range(200)]
    request_ms = statistics.median(r[0] for r in runs)
    exit_ms = statistics.median(r[1] for r in runs)
    line = (f"C launcher, median of 200: request at the server {request_ms:.3f} ms, "
            f"exit after detached {exit_ms:.3f} ms")
    conmon = "/usr/bin/conmon"
    if os.path.exists(conmon):
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            conmon_ms = statistics.median(
                spawn_time([conmon, "--version"], {}, None, devnull)[1] for _ in range(200))
        finally:
            os.close(devnull)
        line += (f"; conmon --version {conmon_ms:.3f} ms "
                 f"(ratio exit/conmon {exit_ms / conmon_ms:.2f})")
    with capsys.disabled():
        print(f"\n{line}")
    assert request_ms < 2.0
