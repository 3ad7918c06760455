"""Shared by the bench scripts: the monitors under test, launched like podman does it."""

from __future__ import annotations

import json
import os
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fakes.bundle import RUNC, make_rootfs, runc_spec, write_bundle

CONMON = "/usr/bin/conmon"


def pymon_launcher(directory: Path) -> str:
    """The production entry point (python -IS, see pymon/entrypoint.py)."""
    path = directory / "pymon"
    subprocess.run([sys.executable, "-m", "pymon.entrypoint", str(path)], check=True)
    return str(path)


class Workspace:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="pymon-bench-"))
        self.rootfs = make_rootfs(self.dir / "rootfs")
        self.spec = runc_spec(self.dir / "spec")
        self.count = 0

    def bundle(self, args: list[str]) -> Path:
        self.count += 1
        return write_bundle(self.dir / f"b{self.count}", self.rootfs, self.spec, args)


class Run:
    """One monitor launch: timings, and the monitor's pid for later measurements."""

    def __init__(self, monitor: str, bundle: Path, cid: str, extra: list[str] = (),  # type: ignore[assignment]
                 runtime: str = RUNC, exec_args: list[str] | None = None) -> None:
        self.cid, self.bundle = cid, bundle
        (bundle / "exits").mkdir(exist_ok=True)
        self.log = bundle / "ctr.log"
        argv = [monitor, "--api-version", "1", "-c", cid, "-u", cid, "-r", runtime,
                "-b", str(bundle), "-p", str(bundle / "pidfile"), "-n", cid,
                "--exit-dir", str(bundle / "exits"), "--full-attach",
                "-l", f"k8s-file:{self.log}", "--log-level", "warning",
                "--conmon-pidfile", str(bundle / "conmon.pid"), *extra]
        if exec_args is not None:  # an exec session into container `cid` (podman -d style)
            spec = bundle / "exec-process"
            spec.write_text(json.dumps({"args": exec_args, "cwd": "/", "env": ["PATH=/bin"],
                                        "user": {"uid": 0, "gid": 0}}))
            argv = [a for a in argv if a != f"k8s-file:{self.log}"]
            argv[argv.index("-l") + 1:argv.index("-l") + 1] = ["none"]
            argv += ["-e", "--exec-process-spec", str(spec)]
        sync, sync_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        start, start_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = dict(os.environ, _OCI_SYNCPIPE=str(sync_child.fileno()),
                   _OCI_STARTPIPE=str(start_child.fileno()))
        t0 = time.perf_counter()
        p0 = subprocess.Popen(argv, env=env, pass_fds=[sync_child.fileno(), start_child.fileno()],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, process_group=0)
        start.send(b"\0")
        sync_child.close()
        start_child.close()
        p0.wait()
        self.t_p0 = time.perf_counter() - t0
        if not select.select([sync], [], [], 30)[0]:
            raise TimeoutError("no pid from " + monitor)
        msg = sync.recv(4096)
        self.t_pid = time.perf_counter() - t0
        if b'"data": -' in msg:
            raise RuntimeError(f"{monitor} failed: {msg!r}")
        self.sync, self.start = sync, start
        self.monitor_pid = int((bundle / "conmon.pid").read_text())

    def start_container(self) -> None:
        subprocess.run([RUNC, "start", self.cid], check=True)

    def memory(self) -> dict[str, float]:
        """RSS and anonymous PSS of the monitor, in MiB (from smaps_rollup)."""
        out = {}
        for line in Path(f"/proc/{self.monitor_pid}/smaps_rollup").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("Rss", "Pss_Anon", "Private_Dirty"):
                out[key] = int(rest.split()[0]) / 1024
        return out

    def wait_monitor(self, timeout: float = 60) -> None:
        try:
            fd = os.pidfd_open(self.monitor_pid)
        except ProcessLookupError:
            return
        try:
            select.select([fd], [], [], timeout)
        finally:
            os.close(fd)

    def stop(self) -> None:
        subprocess.run([RUNC, "kill", self.cid, "KILL"], capture_output=True)
        self.wait_monitor()
        subprocess.run([RUNC, "delete", "--force", self.cid], capture_output=True)
        self.sync.close()
        self.start.close()


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def table(rows: list[tuple[str, float, float, str]]) -> str:
    out = [f"{'metric':<34}{'pymon':>12}{'conmon':>12}{'ratio':>8}"]
    for name, p, c, unit in rows:
        ratio = p / c if c else float("nan")
        out.append(f"{name:<34}{p:>10.2f}{unit:<2}{c:>10.2f}{unit:<2}{ratio:>8.2f}")
    return "\n".join(out)
