"""pymon vs conmon, same machine, same run, interleaved: start-up latency and idle memory.

    python bench/startup.py [--runs N] [--pymon PATH] [--conmon PATH]

Prints medians and pymon/conmon ratios for: exec -> pid on the sync pipe, exec -> the
first process (P0) exits, and the idle monitor's RSS and anonymous PSS."""

from __future__ import annotations

import argparse
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
    p, c = results["pymon"], results["conmon"]
    print(f"runs: {args.runs} each, interleaved; pymon = {monitors['pymon']}")
    print(table([
        ("exec -> pid on sync pipe", median(p["t_pid"]), median(c["t_pid"]), "ms"),
        ("exec -> first process exits", median(p["t_p0"]), median(c["t_p0"]), "ms"),
        ("idle monitor RSS", median(p["Rss"]), median(c["Rss"]), "Mi"),
        ("idle monitor Pss_Anon", median(p["Pss_Anon"]), median(c["Pss_Anon"]), "Mi"),
    ]))


if __name__ == "__main__":
    main()
