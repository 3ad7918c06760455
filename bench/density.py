"""pymon (warm and cold) vs conmon at N sleeping containers: start-up of N one after another,
and the memory of the N idle monitors (and of the server, in warm mode).

    python bench/density.py [--mode warm|cold|both] [--containers 50] [--rounds 2]

Each round, each variant in a rotated order: N `sleep` containers are started one after
another (monitor exec -> pid on the sync pipe -> `runc start`, as podman does), the total
time is taken; after --settle seconds every monitor's /proc/PID/smaps_rollup is read:
Pss_Anon per monitor (median over the N), and the total PSS of the N monitors plus, in
warm mode, the server (whose pages the monitors share: PSS splits each shared page among
its sharers, so the sum is what the group costs). Any other process a monitor keeps
beside the container would be counted too (none was seen: the bench checks).

With --ksm the host's ksmd runs during the bench (its settings are restored after):
pymon-server marks its memory mergeable (pymon/server/ksm.py), so the identical pages its
monitors copied can be merged. Instead of --settle, each round then waits until ksmd has
made two full scans after the last start, and reports ksmd's CPU for that, and its CPU
over the next --settle seconds (the steady state: it keeps scanning).
"""

from __future__ import annotations

import argparse
import subprocess
import time
import uuid
from pathlib import Path

from common import (
    RUNC,
    Monitors,
    Results,
    Run,
    Workspace,
    add_mode_argument,
    banner,
    median,
    memory,
    schedstat_ns,
    wait_gone,
)


def helpers(run: Run) -> list[int]:
    """Children of the monitor other than the container (it is a subreaper's child)."""
    out = []
    try:
        kids = Path(f"/proc/{run.monitor_pid}/task/{run.monitor_pid}/children").read_text()
    except OSError:
        return out
    ctr = run.container_pid()
    return [int(k) for k in kids.split() if int(k) != ctr]


KSM = Path("/sys/kernel/mm/ksm")


class Ksmd:
    """The host's ksmd, run for the bench at `pages` per 20 ms; restore() puts back what
    it found (unmerging first if ksmd was off)."""

    def __init__(self, pages: int) -> None:
        self.saved = {k: (KSM / k).read_text().strip()
                      for k in ("run", "pages_to_scan", "sleep_millisecs")}
        (KSM / "pages_to_scan").write_text(str(pages))
        (KSM / "sleep_millisecs").write_text("20")
        (KSM / "run").write_text("1")
        out = subprocess.run(["pgrep", "-x", "ksmd"], capture_output=True, text=True)
        self.pid = int(out.stdout.split()[0])

    def cpu_ms(self) -> float:
        return schedstat_ns(self.pid) / 1e6

    def full_scans(self) -> int:
        return int((KSM / "full_scans").read_text())

    def wait_scans(self, count: int, timeout: float = 300) -> None:
        target = self.full_scans() + count
        deadline = time.monotonic() + timeout
        while self.full_scans() < target:  # no event to wait on: ksmd only counts
            if time.monotonic() > deadline:
                raise TimeoutError(f"ksmd did not finish {count} scans in {timeout} s")
            time.sleep(0.05)

    def restore(self) -> None:
        if self.saved["run"] != "1":
            (KSM / "run").write_text("2")  # unmerge what was merged for the bench
        for k, v in self.saved.items():
            (KSM / k).write_text(v)


def one_round(ws: Workspace, mon, n: int, settle: float, res: Results, stats: dict,  # type: ignore[no-untyped-def]
              ksmd: Ksmd | None = None) -> None:
    runs: list[Run] = []
    try:
        t0 = time.perf_counter()
        for _ in range(n):
            run = Run(mon, ws.bundle(["sleep", "100000"]), "bd-" + uuid.uuid4().hex[:12])
            runs.append(run)
            run.start_container()
        total = time.perf_counter() - t0
        res.add(f"{n} containers started one after another", mon.name, total * 1000)
        res.add("  per container (exec -> runc start done)", mon.name, total / n * 1000)
        if ksmd is None:
            time.sleep(settle)
        else:
            cpu0 = ksmd.cpu_ms()
            ksmd.wait_scans(2)
            cpu1 = ksmd.cpu_ms()
            time.sleep(settle)
            res.add("  ksmd CPU: two full scans after the starts", mon.name, cpu1 - cpu0)
            res.add("  ksmd CPU after that, % of one CPU", mon.name,
                    (ksmd.cpu_ms() - cpu1) / (settle * 1000) * 100, "%")
        anon, pss = [], 0.0
        extra = 0
        for run in runs:
            m = memory(run.monitor_pid)
            anon.append(m["Pss_Anon"])
            pss += m["Pss"]
            for pid in helpers(run):
                extra += 1
                pss += memory(pid)["Pss"]
        if mon.server is not None:
            server_pss = memory(mon.server.pid)["Pss"]
            pss += server_pss
            stats["warm"] += sum(r.warm for r in runs)
            stats["launches"] += len(runs)
            warm = [memory(r.monitor_pid) for r in runs if r.warm]
            if len(warm) < len(runs):  # some launchers went cold: the warm ones apart
                res.add("  warm-served only: Pss_Anon per monitor", mon.name,
                        median([m["Pss_Anon"] for m in warm]), "MiB")
                res.add(f"  warm-served only: est. total PSS of {n} + server", mon.name,
                        server_pss + n * median([m["Pss"] for m in warm]), "MiB")
        if extra:
            stats.setdefault(f"helper processes ({mon.name})", 0)
            stats[f"helper processes ({mon.name})"] += extra
        res.add(f"idle Pss_Anon per monitor (median of {n})", mon.name, median(anon), "MiB")
        res.add(f"total PSS, {n} monitors (+ server)", mon.name, pss, "MiB")
        res.add("  private memory of one monitor (median)", mon.name,
                median([memory(r.monitor_pid)["Private_Dirty"] for r in runs]), "MiB")
        res.add("  Rss of one monitor (median)", mon.name,
                median([memory(r.monitor_pid)["Rss"] for r in runs]), "MiB")
    finally:
        for run in runs:
            run.kill()
        for run in runs:
            wait_gone(run.monitor_pid)
            subprocess.run([RUNC, "delete", "--force", run.cid], capture_output=True)
            run.sync.close()
            run.start.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    add_mode_argument(ap)
    ap.add_argument("--containers", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--settle", type=float, default=2.0,
                    help="seconds the monitors idle before their memory is read")
    ap.add_argument("--ksm", action="store_true", help="run the host's ksmd (see above)")
    ap.add_argument("--ksm-pages", type=int, default=1000,
                    help="ksmd's pages_to_scan (per 20 ms) during the bench")
    args = ap.parse_args()
    ksmd = Ksmd(args.ksm_pages) if args.ksm else None
    ws = Workspace()
    mons = Monitors(args.mode, ws.dir, budget_ms=args.budget_ms)
    res = Results()
    stats = {"warm": 0, "launches": 0}
    try:
        banner(mons, f"density: {args.containers} containers per variant, {args.rounds} rounds,"
               " variants interleaved (rotated each round)")
        if mons.server is not None:
            server_before = memory(mons.server.pid)
            print(f"server alone: Pss {server_before['Pss']:.1f} MiB, "
                  f"Pss_Anon {server_before['Pss_Anon']:.1f} MiB, Rss {server_before['Rss']:.1f} MiB")
        for i in range(args.rounds):
            for mon in mons.order(i):
                one_round(ws, mon, args.containers, args.settle, res, stats, ksmd)
        if mons.server is not None:
            if not mons.server.alive():
                print("WARNING: the server died during the run:\n" + "\n".join(mons.server.lines))
            print(f"warm launches served by the server: {stats['warm']} of {stats['launches']}")
        for k, v in stats.items():
            if k.startswith("helper"):
                print(f"{k}: {v}")
        print(res.table(mons.names))
    finally:
        mons.close()
        ws.remove()
        if ksmd is not None:
            ksmd.restore()


if __name__ == "__main__":
    main()

