"""Shared by the bench scripts: the monitors under test, launched like podman does it, the
warm-monitor server, and the measuring helpers.

The variants (`--mode warm|cold|both`):

    pymon warm       the compiled launcher handing over to a `pymon-server` started here
    pymon cold (C)   the compiled launcher with no server at its socket: it execs the cold
                     path (a fresh interpreter), as it does on a machine without a server
    pymon cold (py)  the `--python-launcher` script (`python -IS`), no server either
    conmon           /usr/bin/conmon, always, in the same run

Everything pymon runs (server, launchers) is taken from the tree this file is in (not from
whatever the venv's editable install points at), so a frozen copy of the repository can be
benchmarked while others edit the working tree: the server stops serving as soon as its
code changes on disk, which would turn a warm run into a cold one.

BENCH_SERVER_ARGS (split like a shell would, without quoting): more arguments for every
`pymon-server` started here, to compare its options (`--no-snapshot`, `--no-ksm`).
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import select
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fakes.bundle import RUNC, make_rootfs, runc_spec, write_bundle

CONMON = "/usr/bin/conmon"
PYENV = dict(os.environ, PYTHONPATH=str(ROOT))  # pymon from this tree, for -m pymon.*
WARM, COLD_C, COLD_PY, CONMON_NAME = "pymon warm", "pymon cold (C)", "pymon cold (py)", "conmon"
# A warm launch whose launcher found no server answer within its budget and went cold:
# counted apart, so that the warm column holds warm monitors only.
FELL_BACK = "warm, fell back"


# --- the server --------------------------------------------------------------------------


class Server:
    """`pymon-server --socket DIR/s.sock` (as `python -m pymon.server`, from this tree):
    started, awaited until its stderr says "serving on", SIGTERMed by stop()."""

    def __init__(self, directory: Path, timeout: float = 60, verbose: bool = False,
                 command: list[str] | None = None, pass_fds: tuple[int, ...] = (),
                 name: str = "s.sock") -> None:
        """`command` replaces `python -m pymon.server` (a wrapper taking the server's
        arguments after its own, as bench/execsync_server.py does)."""
        self.path = str(directory / name)
        self.lines: list[str] = []
        self.proc = subprocess.Popen([*(command or [sys.executable, "-m", "pymon.server"]),
                                      "--socket", self.path, *(["--verbose"] if verbose else []),
                                      *os.environ.get("BENCH_SERVER_ARGS", "").split()],
                                     env=PYENV, cwd=str(ROOT), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     pass_fds=pass_fds)
        assert self.proc.stderr is not None
        deadline = time.monotonic() + timeout
        buf = b""
        while b"serving on" not in buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.proc.stderr], [], [], left)[0]:
                self.stop()
                raise TimeoutError(f"pymon-server did not start: {buf!r}")
            chunk = os.read(self.proc.stderr.fileno(), 4096)
            if not chunk:
                raise RuntimeError(f"pymon-server exited: {buf!r}")
            buf += chunk
        self.lines.extend(buf.decode(errors="replace").splitlines())
        # keep reading its stderr so that a chatty server never blocks on a full pipe
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.decode(errors="replace").rstrip("\n"))

    def alive(self) -> bool:
        return self.proc.poll() is None

    def children(self) -> list[int]:
        try:
            text = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text()
        except OSError:
            return []
        return [int(p) for p in text.split()]

    def stop(self) -> None:
        # By now every monitor has exited; any child left is something the server keeps
        # (a pre-forked monitor, say) and must go with it, or it outlives the run.
        kids = self.children()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pid in kids:
            if ppid_of(pid) == 1:  # orphaned by the server's exit, not reaped by it
                print(f"warning: pymon-server left process {pid} behind; killing it",
                      file=sys.stderr)
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    continue
                wait_gone(pid, 10)
        reader = getattr(self, "_reader", None)
        if reader is not None:
            reader.join(5)  # its last words: how many launches found a spare
        for line in self.lines:
            if "stopped:" in line:
                print(line.split(": ", 1)[1])
        if self.proc.stderr is not None and not self._reader_alive():
            self.proc.stderr.close()

    def _reader_alive(self) -> bool:
        reader = getattr(self, "_reader", None)
        return reader is not None and reader.is_alive()


# --- the monitors under test -------------------------------------------------------------


@dataclass
class Monitor:
    name: str
    path: str
    env: dict[str, str] = field(default_factory=dict)  # added to the launcher's environment
    server: Server | None = None

    @property
    def is_pymon(self) -> bool:
        return self.name != CONMON_NAME


def write_launcher(dest: Path, python_launcher: bool = False) -> str:
    """The production entry point, `python -m pymon.entrypoint DEST` from this tree: the
    compiled launcher, or with python_launcher the `python -IS` script."""
    cmd = [sys.executable, "-m", "pymon.entrypoint", str(dest)]
    if python_launcher:
        cmd.append("--python-launcher")
    subprocess.run(cmd, check=True, env=PYENV, cwd=str(ROOT))
    if not python_launcher:
        with open(dest, "rb") as f:
            elf = f.read(4) == b"\x7fELF"
        if not elf:
            raise SystemExit("no C compiler: the compiled launcher was not built")
    return str(dest)


def add_mode_argument(ap: object) -> None:
    ap.add_argument("--mode", choices=("warm", "cold", "both"), default="both",  # type: ignore[attr-defined]
                    help="pymon with a warm server, cold, or both (default)")
    ap.add_argument("--budget-ms", type=float,  # type: ignore[attr-defined]
                    help="PYMON_SERVER_BUDGET_MS for the warm launcher (default: unset, the "
                         "shipped 2 ms): how long it waits for the server before going cold; "
                         "on a loaded machine some launches go cold, and a larger budget "
                         "measures the warm monitor alone")


class Monitors:
    """The variants of a --mode, conmon always among them; close() stops the server."""

    def __init__(self, mode: str, directory: Path, conmon: str = CONMON,
                 verbose_server: bool = False, budget_ms: float | None = None) -> None:
        self.server: Server | None = None
        self.list: list[Monitor] = []
        c_launcher = write_launcher(directory / "pymon")
        nowhere = str(directory / "no-server.sock")  # nothing listens: the launcher goes cold
        if mode in ("warm", "both"):
            self.server = Server(directory, verbose=verbose_server)
            env = {"PYMON_SOCKET": self.server.path}
            if budget_ms is not None:
                env["PYMON_SERVER_BUDGET_MS"] = str(budget_ms)
            self.list.append(Monitor(WARM, c_launcher, env, self.server))
        if mode in ("cold", "both"):
            self.list.append(Monitor(COLD_C, c_launcher, {"PYMON_SOCKET": nowhere}))
            self.list.append(Monitor(COLD_PY, write_launcher(directory / "pymon.py", True),
                                     {"PYMON_SOCKET": nowhere}))
        self.list.append(Monitor(CONMON_NAME, conmon))

    def order(self, i: int) -> list[Monitor]:
        """Round i's order: rotated each round, so no variant always runs first or last."""
        k = i % len(self.list)
        return self.list[k:] + self.list[:k]

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.list]

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()

    def describe(self) -> str:
        out = []
        for m in self.list:
            extra = f", server pid {m.server.pid}" if m.server else ""
            if "PYMON_SERVER_BUDGET_MS" in m.env:
                extra += f", budget {m.env['PYMON_SERVER_BUDGET_MS']} ms"
            out.append(f"  {m.name}: {m.path}{extra}")
        return "\n".join(out)


# --- bundles and one launch --------------------------------------------------------------


class Workspace:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="pymon-bench-"))
        self.rootfs = make_rootfs(self.dir / "rootfs")
        self.spec = runc_spec(self.dir / "spec")
        self.count = 0

    def remove(self) -> None:
        """Once every container is deleted: the rootfs copy, bundles, launchers, socket."""
        shutil.rmtree(self.dir, ignore_errors=True)

    def bundle(self, args: list[str], binds: dict[str, str] | None = None) -> Path:
        """A bundle running `args`; `binds` maps container paths to host directories."""
        self.count += 1
        bundle = write_bundle(self.dir / f"b{self.count}", self.rootfs, self.spec, args)
        if binds:
            config = bundle / "config.json"
            spec = json.loads(config.read_text())
            for dest, src in binds.items():
                spec["mounts"].append({"destination": dest, "type": "bind", "source": src,
                                       "options": ["rbind", "rw"]})
            config.write_text(json.dumps(spec))
        return bundle


def schedstat_ns(pid: int | str) -> int:
    """CPU time (user+sys) of one process so far, in ns: the scheduler's own sum
    (/proc/PID/schedstat), where /proc/PID/stat rounds to 10 ms clock ticks."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])


def ppid_of(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


class Run:
    """One monitor launch, as podman does it (sync and start socketpairs, the start byte,
    the first process awaited): timings, the launcher's CPU, and the monitor's pid."""

    def __init__(self, monitor: Monitor, bundle: Path, cid: str, extra: list[str] = (),  # type: ignore[assignment]
                 runtime: str = RUNC, exec_args: list[str] | None = None,
                 sync_mode: bool = False, log: bool = True) -> None:
        self.monitor, self.cid, self.bundle = monitor, cid, bundle
        (bundle / "exits").mkdir(exist_ok=True)
        self.exit_dir = bundle / "exits"
        self.log = bundle / "ctr.log"
        argv = [monitor.path, "--api-version", "1", "-c", cid, "-u", cid, "-r", runtime,
                "-b", str(bundle), "-p", str(bundle / "pidfile"), "-n", cid,
                "--exit-dir", str(self.exit_dir), "--full-attach",
                "-l", f"k8s-file:{self.log}" if log else "none", "--log-level", "warning",
                "--conmon-pidfile", str(bundle / "conmon.pid"), *extra]
        if exec_args is not None:  # an exec session into container `cid` (podman -d style)
            spec = bundle / "exec-process"
            spec.write_text(json.dumps({"args": exec_args, "cwd": "/", "env": ["PATH=/bin"],
                                        "user": {"uid": 0, "gid": 0}}))
            argv[argv.index("-l") + 1] = "none"
            argv += ["-e", "--exec-process-spec", str(spec)]
        if sync_mode:
            argv.append("--sync")
        sync, sync_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        start, start_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = dict(os.environ, _OCI_SYNCPIPE=str(sync_child.fileno()),
                   _OCI_STARTPIPE=str(start_child.fileno()), **monitor.env)
        env.pop("PYTHONPATH", None)
        self.server_cpu0 = schedstat_ns(monitor.server.pid) if monitor.server else 0
        self.t0 = time.perf_counter()
        p0 = subprocess.Popen(argv, env=env, pass_fds=[sync_child.fileno(), start_child.fileno()],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, process_group=0)
        start.send(b"\0")
        sync_child.close()
        start_child.close()
        self.p0 = p0
        self.sync, self.start = sync, start
        if sync_mode:
            return  # the launcher lives as long as the monitor: see wait_launcher()
        self.launcher_cpu = self._reap_launcher()
        self.t_p0 = time.perf_counter() - self.t0
        if not select.select([sync], [], [], 30)[0]:
            raise TimeoutError(f"no pid from {monitor.name}")
        msg = sync.recv(4096)
        self.t_pid = time.perf_counter() - self.t0
        if b'"data": -' in msg:
            raise RuntimeError(f"{monitor.name} failed: {msg!r}")
        self.monitor_pid = int((bundle / "conmon.pid").read_text())
        # Warm means forked by our server; a launcher that found no server in time went
        # cold, and its monitor was reparented when P0 exited.
        self.warm = monitor.server is not None and ppid_of(self.monitor_pid) == monitor.server.pid

    def _reap_launcher(self) -> float:
        """Waits for the launcher (P0); returns its CPU seconds (wait4's rusage: exact,
        unlike /proc's clock ticks)."""
        _, status, ru = os.wait4(self.p0.pid, 0)
        self.p0.returncode = os.waitstatus_to_exitcode(status)
        return ru.ru_utime + ru.ru_stime

    def wait_launcher(self, timeout: float = 60) -> None:
        """--sync: the launcher exits when the monitor does."""
        fd = os.pidfd_open(self.p0.pid)
        try:
            if not select.select([fd], [], [], timeout)[0]:
                raise TimeoutError(f"{self.monitor.name} --sync did not exit")
        finally:
            os.close(fd)
        # Still a zombie: its name tells whether the C launcher stayed itself (warm) or
        # exec'd the interpreter of the cold path.
        comm = Path(f"/proc/{self.p0.pid}/stat").read_text().split("(", 1)[1].rsplit(")", 1)[0]
        self.warm = self.monitor.server is not None and comm == os.path.basename(self.monitor.path)[:15]
        self.launcher_cpu = self._reap_launcher()

    @property
    def variant(self) -> str:
        """The monitor's name, or FELL_BACK for a warm launch that ran cold."""
        if self.monitor.server is not None and not self.warm:
            return FELL_BACK
        return self.monitor.name

    def server_cpu(self) -> float:
        """The server's CPU seconds since this launch began (accept, decode, fork)."""
        if self.monitor.server is None:
            return 0.0
        return (schedstat_ns(self.monitor.server.pid) - self.server_cpu0) / 1e9

    def start_container(self) -> None:
        subprocess.run([RUNC, "start", self.cid], check=True)

    def container_pid(self) -> int:
        return int((self.bundle / "pidfile").read_text())

    def memory(self) -> dict[str, float]:
        return memory(self.monitor_pid)

    def wait_monitor(self, timeout: float = 60) -> None:
        wait_gone(self.monitor_pid, timeout)

    def kill(self) -> None:
        subprocess.run([RUNC, "kill", self.cid, "KILL"], capture_output=True)

    def stop(self) -> None:
        self.kill()
        self.cleanup()

    def cleanup(self) -> None:
        self.wait_monitor()
        subprocess.run([RUNC, "delete", "--force", self.cid], capture_output=True)
        self.sync.close()
        self.start.close()


def wait_gone(pid: int, timeout: float = 60) -> None:
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        if not select.select([fd], [], [], timeout)[0]:
            raise TimeoutError(f"process {pid} still running")
    finally:
        os.close(fd)


def memory(pid: int) -> dict[str, float]:
    """Rss, Pss, Pss_Anon of one process, in MiB (from smaps_rollup)."""
    out = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("Rss", "Pss", "Pss_Anon", "Private_Dirty"):
            out[key] = int(rest.split()[0]) / 1024
    return out


# --- inotify (not in the standard library; five libc calls through ctypes) ----------------

_libc = ctypes.CDLL(None, use_errno=True)
IN_CLOSE_WRITE, IN_MOVED_TO = 0x8, 0x80
_EVENT = struct.Struct("iIII")


class DirWatch:
    """Tells when a file named `name` is complete in a directory: closed after writing
    (written in place) or renamed into it (written atomically)."""

    def __init__(self, directory: Path) -> None:
        self.fd = _libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        if _libc.inotify_add_watch(self.fd, os.fsencode(directory),
                                   IN_CLOSE_WRITE | IN_MOVED_TO) < 0:
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {directory}")

    def fileno(self) -> int:
        return self.fd

    def names(self) -> list[str]:
        """The names of the events queued now (non-blocking)."""
        out = []
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return out
        pos = 0
        while pos < len(data):
            _, _, _, length = _EVENT.unpack_from(data, pos)
            pos += _EVENT.size
            out.append(data[pos:pos + length].rstrip(b"\0").decode())
            pos += length
        return out

    def wait(self, name: str, timeout: float = 30) -> float:
        """Waits for `name`; returns perf_counter() when its event was read."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                raise TimeoutError(f"no {name} in time")
            if name in self.names():
                return time.perf_counter()

    def close(self) -> None:
        os.close(self.fd)


# --- the exit-command probe ----------------------------------------------------------------


def exit_probe(directory: Path) -> Path:
    """An exit command that records its parent's (the monitor's) CPU time while the
    monitor waits for it, just before the monitor exits: schedstat (ns, user+sys) and
    stat's utime and stime (clock ticks), to $PROBE_OUT. conmon and pymon both wait for
    their exit command, so the monitor is alive and has done all its work but exit."""
    probe = directory / "probe.sh"
    probe.write_text('#!/bin/sh\nd=$(date +%s%N)\nread ns rest < /proc/$PPID/schedstat\n'
                     'set -- $(cut -d")" -f2 /proc/$PPID/stat)\n'
                     'echo "$ns ${12} ${13} $d" > "$PROBE_OUT"\n')
    probe.chmod(0o755)
    return probe


CLK_TCK = os.sysconf("SC_CLK_TCK")


def read_probe(path: Path) -> tuple[float, float, float]:
    """(cpu seconds from schedstat, utime seconds, stime seconds)"""
    ns, utime, stime, _ = path.read_text().split()
    return int(ns) / 1e9, int(utime) / CLK_TCK, int(stime) / CLK_TCK


def probe_time_ns(path: Path) -> int:
    """When the exit command ran (time.time_ns() clock)."""
    return int(path.read_text().split()[3])


# --- statistics and the table ---------------------------------------------------------------


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


class Results:
    """values[metric][variant] -> list of samples; metrics keep their insertion order."""

    def __init__(self) -> None:
        self.values: dict[str, dict[str, list[float]]] = {}
        self.units: dict[str, str] = {}

    def add(self, metric: str, variant: str, value: float, unit: str = "ms") -> None:
        self.values.setdefault(metric, {}).setdefault(variant, []).append(value)
        self.units[metric] = unit

    def table(self, variants: list[str]) -> str:
        if any(FELL_BACK in per for per in self.values.values()):
            variants = [*variants[:-1], FELL_BACK, variants[-1]]
        return table(self.values, self.units, variants)


def table(values: dict[str, dict[str, list[float]]], units: dict[str, str],
          variants: list[str]) -> str:
    """Medians per variant, then each pymon variant's median over conmon's, and n."""
    pymons = [v for v in variants if v != CONMON_NAME]
    width = max([len(m) for m in values] + [20]) + 2
    head = f"{'metric':<{width}}" + "".join(f"{v:>17}" for v in variants)
    head += "".join(f"{'ratio ' + v.removeprefix('pymon '):>17}" for v in pymons) + "    n"
    out = [head]
    for metric, per in values.items():
        unit = units.get(metric, "")
        meds = {v: median(per.get(v, [])) for v in variants}
        row = f"{metric:<{width}}"
        for v in variants:
            row += f"{fmt(meds[v]):>13} {unit:<3}"
        c = meds.get(CONMON_NAME, float("nan"))
        for v in pymons:
            ratio = meds[v] / c if c and not math.isnan(c) else float("nan")
            row += f"{ratio:>17.2f}"
        n = sorted({len(per[v]) for v in variants if per.get(v)})
        row += "    " + "/".join(str(x) for x in n)
        out.append(row)
    return "\n".join(out)


def fmt(x: float) -> str:
    if math.isnan(x):
        return "-"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    if abs(x) >= 1:
        return f"{x:.2f}"
    return f"{x:.3f}"


def banner(monitors: Monitors, what: str) -> None:
    print(what)
    print(f"machine: {os.cpu_count()} cpus, load {os.getloadavg()[0]:.2f}; variants:")
    print(monitors.describe())
