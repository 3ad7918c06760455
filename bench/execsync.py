"""Exec probes: ExecSync (`true`) run through the monitor the way CRI-O 1.26 runs it.

    python bench/execsync.py [--mode warm|cold|both] [--runs 100] [--budget-ms MS]
                             [--compare-trio] [--monitor NAME=COMMAND ...] [--conmon PATH]
                             [--gap-ms MS]

kubelet runs an exec probe every few seconds per container, and CRI-O starts one monitor
in the foreground for each (`-e --sync --exec-process-spec F -l F --log-global-size-max
16777216`, see tests/fakes/execsync.py) and waits for it to exit. Each variant below runs
the same probe into the same running runc container, interleaved one probe at a time
(the order rotated each round), and the script prints per probe medians and means of:

  wall         monitor started -> exited: what CRI-O waits for before it reads the result
               (warm: the launcher, which stays until its monitor has reported)
  cpu monitor  the monitor's own CPU. conmon and cold pymon: the process CRI-O started
               (the zombie's schedstat). Warm pymon: the launcher's, plus the monitor the
               server forked (its zombie's schedstat, read by the server's reaper:
               bench/execsync_server.py; a spare's rehearsal is its own), plus the
               server's own CPU from the probe's start to the variant's next probe's
               (accept, decode, hand over or fork, reap, fork the next spare)
  cpu total    the same plus what the monitor waited for (runc exec, the probe): wait4's
               rusage of the process CRI-O started; warm: of the launcher and of the
               forked monitor, plus the server's share

with the ratio of each variant's median to conmon's. Variants (common.py): `pymon warm`
(the compiled launcher, a pymon-server started here), `pymon cold (C)` (the compiled
launcher, no server at its socket), conmon; `--compare-trio` adds `pymon warm, trio`, a
second server whose monitors run ExecSync under trio (monitor/life.py) instead of
monitor/probe.py; `--monitor NAME=COMMAND` adds any command (split like a shell would;
leading VAR=value words become its environment, as CRI-O's monitor_env would), measured
like a cold one. A warm launch that found no server answer within the launcher's budget
(2 ms unless --budget-ms) ran cold: it is counted apart, as `warm, fell back`.
"""

from __future__ import annotations

import argparse
import os
import re
import select
import shlex
import statistics
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from common import (
    COLD_C,
    CONMON,
    CONMON_NAME,
    FELL_BACK,
    ROOT,
    WARM,
    Monitor,
    Run,
    Server,
    Workspace,
    add_mode_argument,
    median,
    schedstat_ns,
    write_launcher,
)

from tests.fakes import execsync
from tests.fakes.bundle import RUNC

RUNC_ROOT = "/run/runc"  # runc's default as root: where common.Run's containers live
WARM_TRIO = "pymon warm, trio"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class Variant:
    name: str
    command: list[str]
    env: dict[str, str]
    server: Server | None = None
    reaped: int | None = None  # read end of the hooked server's "PID OWN TOTAL" records
    samples: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    # A served probe waits here for the server's share, which runs until the variant's next
    # probe starts: the server forks the next spare after the launch, on nobody's time
    pending: dict[str, float] | None = None
    server_cpu_at: int = 0  # the server's schedstat when the pending probe started

    def settle(self, now_ns: int) -> None:
        """Record the pending probe, with the server's CPU from its start to now_ns."""
        if self.pending is not None:
            server = (now_ns - self.server_cpu_at) / 1e9
            p, self.pending = self.pending, None
            self.add(self.name, wall=p["wall"], cpu=p["cpu"] + server,
                     total=p["total"] + server, launcher=p["launcher"], monitor=p["monitor"],
                     server=server)

    def add(self, name: str, **values: float) -> None:
        per = self.samples.setdefault(name, {})
        for key, value in values.items():
            per.setdefault(key, []).append(value * 1000)


def hooked_server(directory: Path, name: str, trio_exec: bool) -> tuple[Server, int]:
    r, w = os.pipe2(os.O_CLOEXEC)
    command = [sys.executable, str(ROOT / "bench" / "execsync_server.py"), str(w),
               *(["--trio"] if trio_exec else []), "--"]
    try:
        return Server(directory, command=command, pass_fds=(w,), name=name), r
    finally:
        os.close(w)


def drain(fd: int) -> None:
    """Drop records of monitors that never got GO (their launcher had gone cold)."""
    while select.select([fd], [], [], 0)[0]:
        if not os.read(fd, 4096):
            return


def read_record(fd: int, timeout: float = 30) -> tuple[int, float, float]:
    """The next "PID OWN_NS TOTAL_NS" line of a hooked server (one monitor per probe, so
    it is this probe's). A line is one write of a few bytes: it arrives whole."""
    if not select.select([fd], [], [], timeout)[0]:
        raise TimeoutError("the server reaped no monitor for a warm probe")
    line = b""
    while not line.endswith(b"\n"):
        chunk = os.read(fd, 1)
        if not chunk:
            raise RuntimeError("the hooked server exited")
        line += chunk
    pid, own, total = line.split()
    return int(pid), int(own) / 1e9, int(total) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=100, help="probes per variant")
    add_mode_argument(ap)
    ap.add_argument("--compare-trio", action="store_true",
                    help="add warm monitors that run ExecSync under trio (monitor/life.py)")
    ap.add_argument("--monitor", action="append", default=[], metavar="NAME=COMMAND",
                    help="another monitor command to measure (repeatable), measured like a cold one")
    ap.add_argument("--conmon", default=CONMON, help="the baseline (ratios are against it)")
    ap.add_argument("--probe", default="true", help="the probe command (split like a shell)")
    ap.add_argument("--gap-ms", type=float, default=0,
                    help="idle time before each probe (default 0: back to back); kubelet's "
                         "probes of one container come seconds apart")
    args = ap.parse_args()

    ws = Workspace()
    variants: list[Variant] = []
    target: Run | None = None
    try:
        launcher = write_launcher(ws.dir / "pymon")
        budget = {} if args.budget_ms is None else {"PYMON_SERVER_BUDGET_MS": str(args.budget_ms)}
        if args.mode in ("warm", "both"):
            server, fd = hooked_server(ws.dir, "s.sock", trio_exec=False)
            variants.append(Variant(WARM, [launcher], {"PATH": PATH, "PYMON_SOCKET": server.path,
                                                       **budget}, server, fd))
            if args.compare_trio:
                server, fd = hooked_server(ws.dir, "trio.sock", trio_exec=True)
                variants.append(Variant(WARM_TRIO, [launcher],
                                        {"PATH": PATH, "PYMON_SOCKET": server.path, **budget},
                                        server, fd))
        if args.mode in ("cold", "both"):
            variants.append(Variant(COLD_C, [launcher], {
                "PATH": PATH, "PYMON_SOCKET": str(ws.dir / "no-server.sock")}))
        for spec in args.monitor:
            name, _, command = spec.partition("=")
            words = shlex.split(command)
            env = {"PATH": PATH}
            while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
                key, _, value = words.pop(0).partition("=")
                env[key] = value
            variants.append(Variant(name, words, env))
        variants.append(Variant(CONMON_NAME, [args.conmon], {"PATH": PATH}))

        target = Run(Monitor(CONMON_NAME, args.conmon), ws.bundle(["sleep", "100000"]),
                     "bench-probe-" + uuid.uuid4().hex[:8])
        target.start_container()
        print(f"ExecSync probe `{args.probe}` into one runc container, {args.runs} runs per "
              f"variant, interleaved; {os.cpu_count()} cpus, load {os.getloadavg()[0]:.2f}")
        for v in variants:
            extra = f", server pid {v.server.pid}" if v.server else ""
            print(f"  {v.name}: {shlex.join(v.command)}{extra}")
        probe = shlex.split(args.probe)
        comm = os.path.basename(launcher)[:15]
        for i in range(args.runs + 1):
            k = i % len(variants)
            for v in variants[k:] + variants[:k]:
                if args.gap_ms:
                    time.sleep(args.gap_ms / 1000)
                measure(v, i == 0, target.cid, probe, ws.dir, comm)
        time.sleep(0.2)  # what the servers do after their last probe (the next spare)
        for v in variants:
            if v.server is not None:
                v.settle(schedstat_ns(v.server.pid))
    finally:
        if target is not None:
            target.stop()
        for v in variants:
            if v.server is not None:
                v.server.stop()
            if v.reaped is not None:
                os.close(v.reaped)
        ws.remove()
    report(variants, args.probe)


def measure(v: Variant, warm_up: bool, cid: str, probe: list[str], directory: Path,
            launcher_comm: str) -> None:
    files = execsync.Files(probe, str(directory))  # CRI-O's temp files, untimed
    try:
        argv = execsync.execsync_argv(cid, "k8s_probe", RUNC, RUNC_ROOT, str(files.pidfile),
                                      str(files.log), str(files.spec), str(directory))
        server0 = 0
        if v.server is not None and v.reaped is not None:
            drain(v.reaped)
            server0 = schedstat_ns(v.server.pid)
            v.settle(server0)
        res = execsync.run(v.command, argv, env=v.env)
        served = v.server is not None and res.comm == launcher_comm
        if served:
            assert v.reaped is not None and v.server is not None
            _, own, total = read_record(v.reaped)
    finally:
        files.cleanup()
    if res.message != {"exit_code": 0}:
        raise RuntimeError(f"{v.name}: probe failed: {res!r}")
    if warm_up:
        return  # page cache, runc's first run, the server's first fork
    if not served:
        name = v.name if v.server is None else FELL_BACK if v.name == WARM else f"{v.name}: fell back"
        v.add(name, wall=res.wall, cpu=res.cpu_monitor, total=res.cpu_total)
        return
    v.pending = {"wall": res.wall, "cpu": res.cpu_monitor + own,
                 "total": res.cpu_total + total, "launcher": res.cpu_monitor, "monitor": own}
    v.server_cpu_at = server0


def report(variants: list[Variant], probe: str) -> None:
    rows: dict[str, dict[str, list[float]]] = {}
    for v in variants:
        for name, per in v.samples.items():
            for key, values in per.items():
                rows.setdefault(name, {}).setdefault(key, []).extend(values)
    base = rows[CONMON_NAME]
    print(f"\nper probe, ms: median / mean; ratio = median / conmon's median (probe `{probe}`)")
    print(f"{'variant':<18}{'wall':>17}{'ratio':>7}{'cpu monitor':>19}{'ratio':>7}"
          f"{'cpu total':>17}{'ratio':>7}{'n':>6}")
    for name, r in rows.items():
        cells = []
        for key in ("wall", "cpu", "total"):
            m, mean = median(r[key]), statistics.fmean(r[key])
            cells.append(f"{m:>8.2f} / {mean:>6.2f}{m / median(base[key]):>7.2f}")
        print(f"{name:<18}" + "".join(cells) + f"{len(r['wall']):>6}")
    for name, r in rows.items():
        if "monitor" in r:
            parts = ", ".join(f"{key} {median(r[key]):.2f}" for key in ("launcher", "monitor",
                                                                         "server"))
            print(f"{name}: cpu monitor = {parts} (medians, ms)")


if __name__ == "__main__":
    main()
