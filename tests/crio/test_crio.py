"""CRI-O 1.26.4 end to end, with pymon as its monitor (set-up in conftest.py).

What CRI-O asks of its monitor, checked through the CRI as a kubelet sees it: pod
sandbox, create/start, logs (also followed, and reopened after a rotation), ExecSync
(output, exit codes, timeout), attach with and without a tty, stop, exit codes, stats,
removal. That pymon is the monitor is checked from the argv CRI-O passed (recorded by the
rig) and from the monitor processes found for each container.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import time
from pathlib import Path

import pytest

from tests.crio.conftest import Pod, Rig, wait_for
from tests.fakes.engine import wait_pid_gone

pytestmark = pytest.mark.timeout(120)

SLEEPER = ["sh", "-c", "echo hello; exec sleep 1000"]
RECORD = re.compile(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}[+-]\d\d:\d\d (stdout|stderr) ([FP]) (.*)")


def records(path: Path) -> list[tuple[bytes, bytes, bytes]]:
    """k8s-file records (stream, flag, content); every line must be one."""
    out = []
    for line in path.read_bytes().split(b"\n")[:-1]:
        m = RECORD.fullmatch(line)
        assert m, f"malformed record {line[:200]!r}"
        out.append((m.group(1), m.group(2), m.group(3)))
    return out


def read_until(fd: int, pattern: bytes, timeout: float = 20) -> bytes:
    """Read `fd` until `pattern` (a regex) matches what was read."""
    out = b""
    deadline = time.monotonic() + timeout
    while not re.search(pattern, out):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise TimeoutError(f"{pattern!r} not seen; got {out[-2000:]!r}")
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the pty's other side is closed
            chunk = b""
        if not chunk:
            raise EOFError(f"EOF before {pattern!r}; got {out[-2000:]!r}")
        out += chunk
    return out


def the_monitor(rig: Rig, cid: str) -> int:
    """The one pymon monitor process watching container `cid`."""
    pids = rig.monitor.pids(f"-c {cid}")
    assert len(pids) == 1, (cid, {pid: describe(pid) for pid in pids})
    return pids.pop()


def describe(pid: int) -> str:
    """A process as /proc shows it, for a failure message."""
    try:
        status = dict(line.split(":\t", 1) for line in
                      Path(f"/proc/{pid}/status").read_text().splitlines() if ":\t" in line)
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")[:200]
    except OSError as e:
        return f"gone ({e.strerror})"
    return (f"ppid {status.get('PPid')} state {status.get('State')} "
            f"name {status.get('Name')} threads {status.get('Threads')} cmdline {cmdline!r}")


def assert_crio_create_argv(argv: list[str], cid: str) -> None:
    """CRI-O's create shape: legacy sync messages, plain -l path, -P, --syslog."""
    assert "--api-version" not in argv
    assert argv[argv.index("-c") + 1] == cid and argv[argv.index("-u") + 1] == cid
    log = argv[argv.index("-l") + 1]
    assert log.startswith("/") and log.endswith(".log"), log  # no driver prefix
    for opt in ("-P", "--socket-dir-path", "--exit-dir", "--persist-dir", "-b", "-p"):
        assert opt in argv, opt
    assert "--syslog" in argv


# --- pod sandbox ------------------------------------------------------------------------

def test_pod_sandbox_create_and_stop(rig: Rig, tmp_path: Path) -> None:
    pod = Pod(rig, tmp_path)
    try:
        assert rig.ok("inspectp", "-o", "go-template", "--template", "{{.status.state}}",
                      pod.id) == "SANDBOX_READY"
        [argv] = rig.monitor_argvs(pod.id)  # the infra container's monitor
        assert_crio_create_argv(argv, pod.id)
        monitor = the_monitor(rig, pod.id)
        rig.ok("stopp", pod.id)
        assert rig.ok("inspectp", "-o", "go-template", "--template", "{{.status.state}}",
                      pod.id) == "SANDBOX_NOTREADY"
        wait_pid_gone(monitor, 10)  # the infra container stopped: its monitor is done
    finally:
        pod.remove()
    assert pod.id not in rig.ok("pods", "-q").split()
    assert not rig.monitor.left(pod.id)


# --- logs -------------------------------------------------------------------------------

TICKER = ["sh", "-c", "i=0; while true; do echo tick$i; i=$((i+1)); usleep 20000; done"]


def ticks(path: Path) -> list[int]:
    out = []
    for stream, flag, content in records(path):
        assert (stream, flag) == (b"stdout", b"F")
        m = re.fullmatch(rb"tick(\d+)", content)
        assert m, content
        out.append(int(m.group(1)))
    return out


def reopen_container_log(rig: Rig, ctr: str) -> None:
    """CRI ReopenContainerLog, which kubelet calls after rotating a log and crictl does
    not offer. The request is one string field: hand-encoded protobuf (tag 1, bytes)."""
    import grpc

    assert len(ctr) < 128  # a one-byte varint length
    with grpc.insecure_channel(f"unix://{rig.state}/crio.sock") as channel:
        call = channel.unary_unary("/runtime.v1.RuntimeService/ReopenContainerLog")
        assert call(b"\x0a" + bytes([len(ctr)]) + ctr.encode(), timeout=30) == b""


def test_logs_follow_and_reopen(rig: Rig, pod: Pod) -> None:
    ctr = pod.create("ticker", TICKER)
    [argv] = rig.monitor_argvs(ctr)
    assert_crio_create_argv(argv, ctr)
    the_monitor(rig, ctr)
    log = pod.log_path("ticker")
    assert argv[argv.index("-l") + 1] == str(log)

    follow = subprocess.Popen(rig.crictl_argv("logs", "-f", ctr), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        assert follow.stdout is not None
        seen = read_until(follow.stdout.fileno(), rb"tick30\n")
        assert seen.startswith(b"tick0\ntick1\n"), seen[:200]
    finally:
        follow.kill()
        follow.wait()
    assert rig.ok("logs", ctr).startswith("tick0\ntick1\n")

    # kubelet's rotation: rename, then ReopenContainerLog; CRI-O asks the monitor over
    # the ctl fifo and waits for the new file
    rotated = log.with_name(log.name + ".1")
    os.rename(log, rotated)
    reopen_container_log(rig, ctr)
    assert log.exists()
    wait_for(lambda: len(ticks(log)) >= 10, 20, "output in the reopened log")
    rig.ok("stop", "--timeout", "5", ctr)
    old, new = ticks(rotated), ticks(log)
    assert old and new
    # nothing lost, nothing twice, and every line after the reopen in the new file
    assert old + new == list(range(len(old) + len(new)))
    out = rig.crictl("logs", ctr)
    assert out.stdout.startswith(f"tick{new[0]}\n"), out.stdout[:100]


# --- ExecSync ---------------------------------------------------------------------------

def test_execsync_output_and_exit_codes(rig: Rig, pod: Pod) -> None:
    ctr = pod.create("app", SLEEPER)
    # stderr written first: crictl prints the response's stdout, then its stderr (each
    # with an extra newline), so the order shows that the streams were told apart
    r = rig.crictl("exec", "-s", ctr, "sh", "-c", "echo err >&2; echo out")
    assert (r.returncode, r.stdout) == (0, "out\n\nerr\n\n"), r
    # a non-zero exit: crictl exits 1 and shows the code and the command's stderr
    r = rig.crictl("exec", "-s", ctr, "sh", "-c", "echo oops >&2; exit 3")
    assert r.returncode == 1 and "exited with 3: oops" in r.stderr, r
    r = rig.crictl("exec", "-s", ctr, "/nonexistent")
    assert r.returncode != 0 and "nonexistent" in r.stderr, r
    shapes = rig.monitor_argvs(ctr)[1:]  # after the create
    assert len(shapes) == 3
    for argv in shapes:  # CRI-O's ExecSync shape, run by pymon in the foreground
        assert "-e" in argv and "--sync" in argv and "-T" not in argv
        assert argv[argv.index("--log-global-size-max") + 1] == "16777216"
        assert "--api-version" not in argv and "-u" not in argv
        assert not Path(argv[argv.index("--exec-process-spec") + 1]).exists()  # CRI-O's temp
    assert not rig.monitor.left(f"-c {ctr} -n")  # every ExecSync monitor has exited


def container_ps(rig: Rig, ctr: str) -> list[str]:
    return rig.ok("exec", "-s", ctr, "ps", "-o", "pid,stat,args").splitlines()[1:]


def test_execsync_timeout_kills_and_reaps_everything(rig: Rig, pod: Pod) -> None:
    """-T expiry: the probe, its background child and a child that left its session are
    all gone (not even zombies) when CRI-O reports the timeout. conmon kills only the
    process group and exits without reaping: `setsid sleep 102` would stay."""
    ctr = pod.create("app", SLEEPER)
    t0 = time.monotonic()
    r = rig.crictl("exec", "-s", "--timeout", "1", ctr, "sh", "-c",
                   "sleep 101 & setsid sleep 102 & exec sleep 103")
    elapsed = time.monotonic() - t0
    assert r.returncode != 0 and "command timed out" in r.stderr, r
    assert elapsed < 1 + 2 + 2, elapsed  # -T, proctree.REAP_DEADLINE, crictl and CRI-O
    argv = rig.monitor_argvs(ctr)[-1]
    assert argv[argv.index("-T") + 1] == "1"
    left = [line for line in container_ps(rig, ctr)
            if re.search(r"sleep 10[123]$", line) or re.match(r"\s*\d+\s+Z", line)]
    assert left == [], left
    r = rig.crictl("exec", "-s", ctr, "echo", "still fine")
    assert (r.returncode, r.stdout.strip()) == (0, "still fine")


# --- attach, exec -it ---------------------------------------------------------------------

def test_attach_stdin(rig: Rig, pod: Pod) -> None:
    ctr = pod.create("reader", ["sh", "-c", "while read l; do echo got:$l; done"], stdin=True)
    [argv] = rig.monitor_argvs(ctr)
    assert "-i" in argv and "--leave-stdin-open" in argv and "-t" not in argv
    attach = subprocess.Popen(rig.crictl_argv("attach", "-i", ctr), stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert attach.stdin is not None and attach.stdout is not None
        for line in (b"l1", b"l2"):
            attach.stdin.write(line + b"\n")
            attach.stdin.flush()
            read_until(attach.stdout.fileno(), b"got:" + line + b"\n")
    finally:
        attach.kill()
        attach.wait()
    wait_for(lambda: b"got:l2" in pod.log_path("reader").read_bytes(), 10, "log")
    assert [c for _, _, c in records(pod.log_path("reader"))] == [b"got:l1", b"got:l2"]


def _with_pty(argv: list[str], send: bytes, expect: bytes) -> bytes:
    """Run argv on a new pty (as a user's terminal), type `send`, read until `expect`."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    try:
        os.write(master, send)
        return read_until(master, expect)
    finally:
        proc.kill()
        proc.wait()
        os.close(master)


def test_attach_tty(rig: Rig, pod: Pod) -> None:
    ctr = pod.create("tty", ["sh"], tty=True, stdin=True)
    [argv] = rig.monitor_argvs(ctr)
    assert "-t" in argv
    out = _with_pty(rig.crictl_argv("attach", "-it", ctr), b"echo attached; tty\n",
                    rb"attached\r?\n/dev/pts/\d+")
    assert b"/dev/pts/" in out
    rig.ok("stop", "--timeout", "0", ctr)  # an interactive sh ignores SIGTERM


def test_exec_tty(rig: Rig, pod: Pod) -> None:
    """Streaming exec: CRI-O 1.26 runs it with runc itself; it needs only a container
    the monitor keeps running."""
    ctr = pod.create("app", SLEEPER)
    out = _with_pty(rig.crictl_argv("exec", "-it", ctr, "sh"), b"tty; echo done$((1+1))\n",
                    rb"/dev/pts/\d+\r?\ndone2")
    assert b"done2" in out


# --- exit codes, stop, stats, rm ----------------------------------------------------------

def test_exit_code_stop_stats_rm(rig: Rig, pod: Pod) -> None:
    e7 = pod.create("exit7", ["sh", "-c", "echo bye; exit 7"])
    app = pod.create("app", SLEEPER)
    rig.wait_state(e7, "CONTAINER_EXITED 7")  # read back from the exit file
    assert rig.ok("logs", e7) == "bye"
    for pid in rig.monitor.pids(f"-c {e7}"):  # done after the exit file: it ends by itself
        wait_pid_gone(pid, 10)

    stats = json.loads(rig.ok("stats", "-o", "json", "--id", app))["stats"]
    assert [s["attributes"]["id"] for s in stats] == [app]
    # CRI-O reads these from the container's cgroups (the monitor has no part in it)
    assert stats[0]["writableLayer"] is not None, stats

    monitor = the_monitor(rig, app)
    rig.ok("stop", "--timeout", "5", app)
    rig.wait_state(app, "CONTAINER_EXITED 143")  # SIGTERM
    wait_pid_gone(monitor, 10)
    assert rig.ok("logs", app) == "hello"

    rig.ok("rm", e7, app)
    listed = rig.ok("ps", "-a", "-q").split()
    assert e7 not in listed and app not in listed
