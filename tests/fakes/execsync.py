"""ExecSync the way CRI-O 1.26 runs it: the monitor in the foreground with --sync.

CRI-O (internal/oci runtime_oci.go, ExecSyncContainer) writes the process spec to a temp
file, makes two pipes (sync: the monitor writes fd 3; start: the monitor reads fd 4),
starts the monitor with the argv below and only those fds and `_OCI_*` variables (plus the
handler's monitor_env), writes one start byte, waits for the monitor to exit, and only
then decodes `{"exit_code": N[, "message": "..."]}` from the sync pipe. The command's
output is read from the k8s-file log named by -l. The monitor's own stdout/stderr are
kept for error reports only.

Used by tests/crio (bad input, fed the exact argv CRI-O passes) and bench/execsync.py.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

LOG_GLOBAL_SIZE_MAX = "16777216"  # what CRI-O passes for every ExecSync


def execsync_argv(cid: str, name: str, runtime: str, runtime_root: str, pidfile: str,
                  log: str, spec: str, socket_dir: str, timeout: int | None = None) -> list[str]:
    """The argv CRI-O 1.26 passes (as recorded by `crio-rig start --trace-conmon`)."""
    argv = ["-c", cid, "-n", name, "-r", runtime, "-p", pidfile, "-e", "-l", log,
            "--socket-dir-path", socket_dir, "--log-level", "info", "--sync",
            "--log-global-size-max", LOG_GLOBAL_SIZE_MAX]
    if timeout is not None:
        argv += ["-T", str(timeout)]
    return argv + ["--exec-process-spec", spec, "--runtime-arg", f"--root={runtime_root}"]


def process_spec(args: Sequence[str]) -> dict:
    """A minimal OCI process for `runc exec --process` (what CRI-O derives from the
    container's spec is longer; runc needs no more than this)."""
    return {"terminal": False, "user": {"uid": 0, "gid": 0}, "args": list(args),
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "cwd": "/"}


class Result:
    """What CRI-O gets from one ExecSync monitor run."""

    def __init__(self, returncode: int, sync: bytes, log: bytes, stdout: bytes, stderr: bytes,
                 wall: float, cpu_total: float, cpu_monitor: float, pid: int,
                 comm: str = "") -> None:
        self.returncode, self.sync, self.log = returncode, sync, log
        self.stdout, self.stderr = stdout, stderr
        self.wall = wall  # seconds: monitor started -> exited (CRI-O's cmd.Wait())
        self.cpu_total = cpu_total  # seconds: the monitor and everything it waited for
        self.cpu_monitor = cpu_monitor  # seconds: the monitor process alone
        self.pid = pid
        # the process name it exited with: a C launcher that exec'd the cold path's
        # interpreter has the interpreter's
        self.comm = comm

    @property
    def message(self) -> dict:
        return json.loads(self.sync) if self.sync else {}

    def __repr__(self) -> str:
        return (f"Result(rc={self.returncode}, sync={self.sync!r}, log={self.log[:300]!r}, "
                f"stderr={self.stderr[:500]!r})")


def run(monitor: Sequence[str], argv: Sequence[str], env: dict[str, str] | None = None,
        start: bool = True, timeout: float = 60) -> Result:
    """Run one ExecSync monitor (`monitor` is the command, e.g. [path] or a wrapper) and
    wait for it. The caller owns the spec, pidfile and log paths in `argv`."""
    sync_r, sync_w = os.pipe2(os.O_CLOEXEC)
    start_r, start_w = os.pipe2(os.O_CLOEXEC)
    child_env = dict(env if env is not None else
                     {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"})
    # CRI-O puts them at 3 and 4; the monitor takes the numbers from the environment
    child_env.update(_OCI_SYNCPIPE=str(sync_w), _OCI_STARTPIPE=str(start_r))
    t0 = time.perf_counter()
    proc = subprocess.Popen([*monitor, *argv], env=child_env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            pass_fds=(sync_w, start_r))
    os.close(sync_w)
    os.close(start_r)
    try:
        if start:
            try:
                os.write(start_w, b"\0")
            except BrokenPipeError:
                pass  # the monitor failed before reading it
        out, err, status, usage = _wait(proc, timeout)
        wall = time.perf_counter() - t0
        cpu_monitor, comm = _self_cpu(proc.pid)
        ready = select.select([sync_r], [], [], 0)[0]
        sync = os.read(sync_r, 65536) if ready else b""
    finally:
        os.close(sync_r)
        os.close(start_w)
        if proc.returncode is None:
            proc.kill()
            proc.wait()
    log_path = argv[list(argv).index("-l") + 1]
    try:
        log = Path(log_path).read_bytes()
    except OSError:
        log = b""
    cpu_total = usage.ru_utime + usage.ru_stime
    return Result(os.waitstatus_to_exitcode(status), sync, log, out, err, wall, cpu_total,
                  cpu_monitor if cpu_monitor is not None else cpu_total, proc.pid, comm)


_schedstat: dict[int, tuple[float, str]] = {}


def _wait(proc: subprocess.Popen[bytes], timeout: float) -> tuple[bytes, bytes, int, os.struct_rusage]:
    """Read the monitor's stdout/stderr to EOF, then wait4 it. Before reaping, the
    zombie's /proc/PID/schedstat gives the CPU time of the monitor alone (wait4's rusage
    also counts the runtime it waited for)."""
    assert proc.stdout is not None and proc.stderr is not None
    deadline = time.monotonic() + timeout
    out, err = b"", b""
    streams = {proc.stdout.fileno(): "out", proc.stderr.fileno(): "err"}
    while streams:
        ready = select.select(list(streams), [], [], max(0.0, deadline - time.monotonic()))[0]
        if not ready:
            raise TimeoutError(f"monitor {proc.pid} still running after {timeout}s")
        for fd in ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                del streams[fd]
            elif streams[fd] == "out":
                out += chunk
            else:
                err += chunk
    os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)  # a zombie now, not reaped
    try:
        ns = int(Path(f"/proc/{proc.pid}/schedstat").read_text().split()[0])
        stat = Path(f"/proc/{proc.pid}/stat").read_text()
        _schedstat[proc.pid] = ns / 1e9, stat[stat.index("(") + 1:stat.rindex(")")]
    except (OSError, ValueError, IndexError):
        pass
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    proc.stdout.close()
    proc.stderr.close()
    return out, err, status, usage


def _self_cpu(pid: int) -> tuple[float | None, str]:
    return _schedstat.pop(pid, (None, ""))


class Files:
    """Temp paths for one ExecSync, as CRI-O makes them (spec, pidfile, log), removed by
    `cleanup`."""

    def __init__(self, args: Sequence[str] | None, directory: str | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="execsync-", dir=directory))
        self.spec = self.dir / "exec-process"
        self.pidfile = self.dir / "pidfile"
        self.log = self.dir / "crio-log"
        if args is not None:
            self.spec.write_text(json.dumps(process_spec(args)))

    def cleanup(self) -> None:
        for p in sorted(self.dir.rglob("*"), reverse=True):
            if p.is_dir():
                p.rmdir()
            else:
                p.unlink()
        if self.dir.exists():
            self.dir.rmdir()
