"""pymon vs conmon, same machine, same run, interleaved: start-up latency and idle memory.

    python bench/startup.py [--runs N] [--pymon PATH] [--conmon PATH]

Prints medians and pymon/conmon ratios for: exec -> pid on the sync pipe, exec -> the
first process (P0) exits, and the idle monitor's RSS and anonymous PSS."""

from __future__ import annotations

import argparse
import os
import time
import uuid

from common import CONMON, Run, Workspace, median, pymon_launcher, table


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--pymon")
    ap.add_argument("--conmon", default=CONMON)
    ap.add_argument("--idle", type=float, default=1.0, help="seconds before measuring memory")
    args = ap.parse_args()
    ws = Workspace()
    monitors = {"pymon": args.pymon or pymon_launcher(ws.dir), "conmon": args.conmon}
    results: dict[str, dict[str, list[float]]] = {m: {} for m in monitors}
    for i in range(args.runs):
        order = list(monitors) if i % 2 == 0 else list(reversed(monitors))
        for name in order:
            run = Run(monitors[name], ws.bundle(["sleep", "1000"]), "bench-" + uuid.uuid4().hex[:12])
            try:
                run.start_container()
                time.sleep(args.idle)  # let the monitor settle into its idle loop
                r = results[name]
                r.setdefault("t_pid", []).append(run.t_pid * 1000)
                r.setdefault("t_p0", []).append(run.t_p0 * 1000)
                for k, v in run.memory().items():
                    r.setdefault(k, []).append(v)
            finally:
                run.stop()
    # exec sessions (one monitor each, as podman runs them) into one running container
    target = Run(CONMON, ws.bundle(["sleep", "1000"]), "bench-target-" + uuid.uuid4().hex[:8])
    target.start_container()
    execs: dict[str, dict[str, list[float]]] = {m: {} for m in monitors}
    try:
        for i in range(args.runs):
            order = list(monitors) if i % 2 == 0 else list(reversed(monitors))
            for name in order:
                session_dir = target.bundle / uuid.uuid4().hex[:12]
                session_dir.mkdir()
                run = Run(monitors[name], session_dir, target.cid, exec_args=["sleep", "1000"])
                try:
                    time.sleep(args.idle)
                    r = execs[name]
                    r.setdefault("t_pid", []).append(run.t_pid * 1000)
                    for k, v in run.memory().items():
                        r.setdefault(k, []).append(v)
                finally:
                    exec_pid = int((session_dir / "pidfile").read_text())
                    os.kill(exec_pid, 9)
                    run.wait_monitor()
                    run.sync.close()
                    run.start.close()
    finally:
        target.stop()
    p, c = results["pymon"], results["conmon"]
    pe, ce = execs["pymon"], execs["conmon"]
    print(f"runs: {args.runs} each, interleaved; pymon = {monitors['pymon']}")
    print(table([
        ("exec -> pid on sync pipe", median(p["t_pid"]), median(c["t_pid"]), "ms"),
        ("exec -> first process exits", median(p["t_p0"]), median(c["t_p0"]), "ms"),
        ("idle monitor RSS", median(p["Rss"]), median(c["Rss"]), "Mi"),
        ("idle monitor Pss_Anon", median(p["Pss_Anon"]), median(c["Pss_Anon"]), "Mi"),
        ("exec session: exec -> pid", median(pe["t_pid"]), median(ce["t_pid"]), "ms"),
        ("exec session: idle RSS", median(pe["Rss"]), median(ce["Rss"]), "Mi"),
        ("exec session: idle Pss_Anon", median(pe["Pss_Anon"]), median(ce["Pss_Anon"]), "Mi"),
    ]))


if __name__ == "__main__":
    main()
