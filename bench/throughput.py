"""pymon (warm and cold) vs conmon relaying a flood of output into k8s-file, same run,
interleaved.

    python bench/throughput.py [--mode warm|cold|both] [--mib 512] [--runs 3] [--attach]

For each case prints MiB/s (from `runc start` to the exit command) and the monitor's CPU
seconds (user+sys from /proc/<monitor>/schedstat, and the user/sys split from its stat,
read by the exit command, which runs while the monitor waits for it), with pymon/conmon
ratios. --attach adds one attach client that reads everything."""

from __future__ import annotations

import argparse
import os
import socket
import threading
import time
import uuid
from pathlib import Path

from common import (WARM, Monitor, Monitors, Results, Run, Workspace, add_mode_argument,
                    banner, exit_probe, probe_time_ns, read_probe)

LINE = "x" * 79  # + newline = 80-byte lines

CASES = {
    "80-byte lines": lambda n: f"yes {LINE} | head -c {n}",
    "no newlines": lambda n: f"head -c {n} /dev/zero | tr '\\0' 'n'",
}


def drain_attach(path: Path, done: dict[str, int]) -> None:
    fd = os.open(str(path), os.O_PATH)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.connect(f"/proc/self/fd/{fd}")
    os.close(fd)
    total = 0
    while True:
        pkt = s.recv(8193)
        if not pkt:
            break
        total += len(pkt) - 1
    done["bytes"] = total


def one(monitor: Monitor, ws: Workspace, script: str, probe: Path, attach: bool,
        stats: dict[str, int]) -> tuple[str, int, float, float, float, float, int | None]:
    bundle = ws.bundle(["sh", "-c", script])
    out = bundle / "probe.out"
    os.environ["PROBE_OUT"] = str(out)
    run = Run(monitor, bundle, "tp-" + uuid.uuid4().hex[:10],
              ["--exit-command", str(probe)])
    got: dict[str, int] = {}
    t = None
    if attach:
        t = threading.Thread(target=drain_attach, args=(bundle / "attach", got))
        t.start()
    t0 = time.time_ns()
    run.start_container()
    run.wait_monitor(600)
    if t is not None:
        t.join(60)
    end_ns = probe_time_ns(out)
    cpu, user, sys_ = read_probe(out)
    if monitor.name == WARM:
        stats["warm"] += run.warm
        stats["launches"] += 1
    run.stop()
    size = run.log.stat().st_size
    run.log.unlink()
    secs = (int(end_ns) - t0) / 1e9
    return run.variant, size, secs, cpu, user, sys_, got.get("bytes")


def main() -> None:
    ap = argparse.ArgumentParser()
    add_mode_argument(ap)
    ap.add_argument("--mib", type=int, default=512)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--attach", action="store_true")
    args = ap.parse_args()
    ws = Workspace()
    mons = Monitors(args.mode, ws.dir, budget_ms=args.budget_ms)
    probe = exit_probe(ws.dir)
    n = args.mib << 20
    res = Results()
    stats = {"warm": 0, "launches": 0}
    try:
        banner(mons, f"throughput: {args.mib} MiB per run, {args.runs} runs each, interleaved"
               + (", one attach client reading" if args.attach else ""))
        for case, make in CASES.items():
            for i in range(args.runs):
                for mon in mons.order(i):
                    v, size, secs, cpu, user, sys_, attached = one(mon, ws, make(n), probe,
                                                                   args.attach, stats)
                    if args.attach and attached != n:
                        raise SystemExit(f"{mon.name}: attach client got {attached} of {n} bytes")
                    res.add(f"{case}: MiB/s", v, args.mib / secs, "")
                    res.add(f"{case}: monitor CPU", v, cpu, "s")
                    res.add(f"{case}:   user (ticks)", v, user, "s")
                    res.add(f"{case}:   sys (ticks)", v, sys_, "s")
        if mons.server is not None:
            print(f"warm launches served by the server: {stats['warm']} of {stats['launches']}")
        print(res.table(mons.names))
    finally:
        mons.close()
        ws.remove()


if __name__ == "__main__":
    main()
