"""pymon (warm and cold) vs conmon, same run, interleaved: start-up, exit and CPU per launch.

    python bench/startup.py [--mode warm|cold|both] [--runs N] [--gap-ms MS]

Per round, each variant (common.py) in a rotated order:

  - a `true` container: exec of the monitor -> the launcher (P0) exits, -> the pid on the
    sync pipe, -> the exit file (inotify; `runc start` is issued by the bench as soon as
    the pid is there, the same for all); and the CPU of launcher + monitor over its life:
    the launcher's from wait4, the monitor's from /proc/<monitor>/schedstat read by its
    exit command (the monitor is alive then, with all its work but exiting done; it is
    not the bench's child in warm mode nor after P0 daemonized it, so no rusage). In warm
    mode the server's CPU for the launch (accept, decode, fork: its schedstat before and
    after) is added: it is work done for that launch only.
  - a container blocked on a fifo the bench holds, idle for --idle s, then released: its
    exit (a pidfd on the container process) -> the exit file (inotify).
  - an exec session running `true` with --sync: exec -> the launcher exits (podman's
    `exec` path without -d; the same figure can be cross-checked from outside with any
    whole-process timer, since the launcher lives exactly as long as the monitor).

Each launch starts after --gap-ms of idle time (default 50). Back to back (0), a `runc
create` was ~6 ms faster when the launch before it had moved a process between cgroups
less than about an RCU grace period earlier: runc's write to cgroup.procs takes the
cgroup threadgroup rwsem for writing, whose rcu_sync waits for a grace period unless the
previous writer left less than one ago (kernel stacks of runc's waits: synchronize_rcu_normal
< rcu_sync_enter < percpu_down_write < cgroup_procs_write_start; perf sched: runc blocked 2 ms
in uninterruptible sleep, against 8-20 ms otherwise). Whether it had passed depended on how
soon the launch before, of the other variant, had ended, so one variant's pace moved the
other's figures: conmon's create after conmon's exec session took 14.0 ms (median of 30),
after pymon's launch 21.3, and pymon's 20.2-20.7 after either. After 50 ms every create
waits alike.

Prints medians, pymon/conmon ratios and the number of runs.
"""

from __future__ import annotations

import argparse
import os
import select
import time
import uuid

from common import (
    FELL_BACK,
    DirWatch,
    Monitors,
    Results,
    Run,
    Workspace,
    add_mode_argument,
    banner,
    exit_probe,
    read_probe,
)


def true_container(ws: Workspace, mon, probe, res: Results, stats: dict) -> None:  # type: ignore[no-untyped-def]
    bundle = ws.bundle(["true"])
    os.environ["PROBE_OUT"] = str(bundle / "probe.out")
    (bundle / "exits").mkdir()
    watch = DirWatch(bundle / "exits")
    cid = "bs-" + uuid.uuid4().hex[:12]
    try:
        run = Run(mon, bundle, cid, ["--exit-command", str(probe)])
        run.start_container()
        t_file = watch.wait(cid) - run.t0
    finally:
        watch.close()
    run.wait_monitor()
    cpu, _, _ = read_probe(bundle / "probe.out")
    server = run.server_cpu()
    run.cleanup()
    count(stats, run)
    v = run.variant
    res.add("exec -> P0 (launcher) exits", v, run.t_p0 * 1000)
    res.add("exec -> pid on sync pipe", v, run.t_pid * 1000)
    res.add("exec -> exit file (`true`)", v, t_file * 1000)
    res.add("CPU launcher+monitor(+server)", v, (run.launcher_cpu + cpu + server) * 1000)
    res.add("  of which launcher", v, run.launcher_cpu * 1000)
    res.add("  of which monitor", v, cpu * 1000)
    if mon.server is not None:
        res.add("  of which server", v, server * 1000)


def count(stats: dict, run: Run) -> None:  # type: ignore[type-arg]
    if run.monitor.server is not None:
        stats["warm"] += run.warm
        stats["launches"] += 1


def exit_latency(ws: Workspace, mon, idle: float, res: Results, stats: dict) -> None:  # type: ignore[no-untyped-def]
    fifo_dir = ws.dir / f"fifo{ws.count}"
    fifo_dir.mkdir()
    os.mkfifo(fifo_dir / "go")
    bundle = ws.bundle(["sh", "-c", "read x < /w/go"], binds={"/w": str(fifo_dir)})
    cid = "be-" + uuid.uuid4().hex[:12]
    run = Run(mon, bundle, cid)
    try:
        run.start_container()
        w = os.open(fifo_dir / "go", os.O_WRONLY)  # returns once the container reads it
        time.sleep(idle)  # the monitor settles into its idle loop
        pidfd = os.pidfd_open(run.container_pid())
        watch = DirWatch(run.exit_dir)
        try:
            os.write(w, b"x\n")
            os.close(w)
            select.select([pidfd], [], [], 30)
            t_exit = time.perf_counter()
            t_file = watch.wait(cid)
        finally:
            os.close(pidfd)
            watch.close()
        count(stats, run)
        res.add("container exits -> exit file", run.variant, (t_file - t_exit) * 1000)
    finally:
        run.stop()


def exec_sync(ws: Workspace, mon, target: Run, res: Results, stats: dict) -> None:  # type: ignore[no-untyped-def]
    session = target.bundle / uuid.uuid4().hex[:12]
    session.mkdir()
    run = Run(mon, session, target.cid, exec_args=["true"], sync_mode=True)
    run.wait_launcher()
    t = time.perf_counter() - run.t0
    count(stats, run)
    res.add("exec session `true` --sync: exec -> exit", run.variant, t * 1000)
    run.sync.close()
    run.start.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    add_mode_argument(ap)
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--idle", type=float, default=0.3,
                    help="seconds a container stays blocked before it is released")
    ap.add_argument("--gap-ms", type=float, default=50,
                    help="idle time before each launch (default 50; 0: back to back, see above)")
    args = ap.parse_args()
    ws = Workspace()
    mons = Monitors(args.mode, ws.dir, budget_ms=args.budget_ms)
    probe = exit_probe(ws.dir)
    res = Results()
    stats = {"warm": 0, "launches": 0}
    try:
        banner(mons, f"startup: {args.runs} rounds, variants interleaved (rotated each round)"
                     + f", {args.gap_ms:g} ms idle before each launch")
        target = Run(mons.list[-1], ws.bundle(["sleep", "100000"]), "bt-" + uuid.uuid4().hex[:8])
        target.start_container()
        try:
            gap = args.gap_ms / 1000
            for i in range(args.runs):
                for mon in mons.order(i):
                    time.sleep(gap)
                    true_container(ws, mon, probe, res, stats)
                for mon in mons.order(i):
                    time.sleep(gap)
                    exit_latency(ws, mon, args.idle, res, stats)
                for mon in mons.order(i):
                    time.sleep(gap)
                    exec_sync(ws, mon, target, res, stats)
        finally:
            target.stop()
        if mons.server is not None:
            if not mons.server.alive():
                print("WARNING: the server died during the run:\n" + "\n".join(mons.server.lines))
            print(f"warm launches served by the server: {stats['warm']} of {stats['launches']};"
                  f" the others went cold and are in the column '{FELL_BACK}'")
        print(res.table(mons.names))
    finally:
        mons.close()
        ws.remove()


if __name__ == "__main__":
    main()
