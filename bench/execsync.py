"""Exec probes: ExecSync (`true`) run through the monitor the way CRI-O 1.26 runs it.

    python bench/execsync.py [--runs 100] [--monitor NAME=COMMAND ...] [--conmon PATH]

kubelet runs an exec probe every few seconds per container, and CRI-O starts one monitor
in the foreground for each (`-e --sync --exec-process-spec F -l F --log-global-size-max
16777216`, see tests/fakes/execsync.py). Each monitor below runs the same probe into the
same running runc container, interleaved one probe at a time, and the script prints per
probe medians (and means) of:
  wall         monitor started -> exited (what CRI-O waits for before it reads the result)
  cpu monitor  the monitor process alone (schedstat of its zombie, before it is reaped)
  cpu total    the monitor and what it waited for (runc exec, the probe): wait4's rusage
with the ratio of each monitor to conmon.

Monitors are commands (split like a shell would, leading VAR=value words become the
monitor's environment, as CRI-O's monitor_env would): the default is pymon's production
entry point (cold) against Debian's conmon. A warm mode is one more `--monitor`, e.g.
`--monitor 'pymon-warm=PYMON_SOCKET=/run/pymon.sock /usr/libexec/pymon'`, with the server
started beforehand.
"""

from __future__ import annotations

import argparse
import re
import shlex
import shutil
import statistics
import uuid

from common import CONMON, Run, Workspace, median, pymon_launcher

from tests.fakes import execsync
from tests.fakes.bundle import RUNC

RUNC_ROOT = "/run/runc"  # runc's default as root: where common.Run's containers live


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=100, help="probes per monitor")
    ap.add_argument("--monitor", action="append", default=[], metavar="NAME=COMMAND",
                    help="a monitor to measure (repeatable); default: pymon-cold=<entry point>")
    ap.add_argument("--conmon", default=CONMON, help="the baseline (ratios are against it)")
    ap.add_argument("--probe", default="true", help="the probe command (split like a shell)")
    args = ap.parse_args()

    ws = Workspace()
    monitors: dict[str, list[str]] = {}
    envs: dict[str, dict[str, str]] = {}
    for spec in args.monitor or [f"pymon-cold={pymon_launcher(ws.dir)}"]:
        name, _, command = spec.partition("=")
        words = shlex.split(command)
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
        while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
            key, _, value = words.pop(0).partition("=")
            env[key] = value
        monitors[name], envs[name] = words, env
    monitors["conmon"], envs["conmon"] = [args.conmon], {}

    target = Run(CONMON, ws.bundle(["sleep", "100000"]), "bench-probe-" + uuid.uuid4().hex[:8])
    target.start_container()
    results: dict[str, dict[str, list[float]]] = {m: {"wall": [], "cpu": [], "total": []}
                                                  for m in monitors}
    probe = shlex.split(args.probe)
    try:
        for i in range(args.runs + 1):
            order = list(monitors) if i % 2 == 0 else list(reversed(monitors))
            for name in order:
                files = execsync.Files(probe, str(ws.dir))  # CRI-O's temp files, untimed
                try:
                    argv = execsync.execsync_argv(
                        target.cid, "k8s_probe", RUNC, RUNC_ROOT, str(files.pidfile),
                        str(files.log), str(files.spec), str(ws.dir))
                    res = execsync.run(monitors[name], argv, env=envs[name] or None)
                finally:
                    files.cleanup()
                if res.message != {"exit_code": 0}:
                    raise RuntimeError(f"{name}: probe failed: {res!r}")
                if i == 0:
                    continue  # warm-up: page cache, runc's first run
                r = results[name]
                r["wall"].append(res.wall * 1000)
                r["cpu"].append(res.cpu_monitor * 1000)
                r["total"].append(res.cpu_total * 1000)
    finally:
        target.stop()
        shutil.rmtree(ws.dir, ignore_errors=True)

    base = results["conmon"]
    print(f"ExecSync probe `{args.probe}`, {args.runs} runs per monitor, interleaved; "
          "per probe, ms (median / mean); ratio = median / conmon's median")
    print(f"{'monitor':<14}{'wall':>18}{'ratio':>7}{'cpu monitor':>20}{'ratio':>7}"
          f"{'cpu total':>18}{'ratio':>7}")
    for name, r in results.items():
        cells = []
        for key in ("wall", "cpu", "total"):
            m, mean = median(r[key]), statistics.fmean(r[key])
            cells.append(f"{m:>9.2f} / {mean:>6.2f}{m / median(base[key]):>7.2f}")
        print(f"{name:<14}" + "".join(cells))


if __name__ == "__main__":
    main()
