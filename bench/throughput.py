"""pymon vs conmon relaying a flood of output into k8s-file, same run, interleaved.

    python bench/throughput.py [--mib 512] [--runs 3] [--attach]

For each case prints MiB/s (from `runc start` to the exit command) and the monitor's CPU
seconds (user+sys, read from /proc/<monitor>/stat by the exit command, which runs while the
monitor waits for it), with pymon/conmon ratios. --attach adds one attach client that
reads everything."""

from __future__ import annotations

import argparse
import os
import socket
import threading
import time
import uuid
from pathlib import Path

from common import CONMON, Run, Workspace, median, pymon_launcher, table

CLK_TCK = os.sysconf("SC_CLK_TCK")
LINE = "x" * 79  # + newline = 80-byte lines

CASES = {
    "80-byte lines": lambda n: f"yes {LINE} | head -c {n}",
    "no newlines": lambda n: f"head -c {n} /dev/zero | tr '\\0' 'n'",
}


def exit_probe(directory: Path) -> Path:
    probe = directory / "probe.sh"
    probe.write_text('#!/bin/sh\nd=$(date +%s%N)\nset -- $(cut -d")" -f2 /proc/$PPID/stat)\n'
                     'echo "$d ${12} ${13}" > "$1"\n'.replace('"$1"', '"$PROBE_OUT"'))
    probe.chmod(0o755)
    return probe


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


def one(monitor: str, ws: Workspace, script: str, probe: Path, attach: bool) -> tuple[float, float]:
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
    end_ns, utime, stime = out.read_text().split()
    run.stop()
    size = run.log.stat().st_size
    run.log.unlink()
    secs = (int(end_ns) - t0) / 1e9
    return size, secs, int(utime) / CLK_TCK, int(stime) / CLK_TCK, got.get("bytes")  # type: ignore[return-value]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=512)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--attach", action="store_true")
    ap.add_argument("--pymon")
    ap.add_argument("--conmon", default=CONMON)
    args = ap.parse_args()
    ws = Workspace()
    probe = exit_probe(ws.dir)
    monitors = {"pymon": args.pymon or pymon_launcher(ws.dir), "conmon": args.conmon}
    n = args.mib << 20
    rows = []
    for case, make in CASES.items():
        res: dict[str, dict[str, list[float]]] = {m: {"rate": [], "cpu": [], "user": [], "sys": []}
                                                  for m in monitors}
        for i in range(args.runs):
            for name in (list(monitors) if i % 2 == 0 else list(reversed(monitors))):
                _size, secs, user, sys_, attached = one(monitors[name], ws, make(n), probe,
                                                       args.attach)
                if args.attach and attached != n:
                    raise SystemExit(f"{name}: attach client got {attached} of {n} bytes")
                res[name]["rate"].append(args.mib / secs)
                res[name]["cpu"].append(user + sys_)
                res[name]["user"].append(user)
                res[name]["sys"].append(sys_)
        rows.append((f"{case}: MiB/s", median(res["pymon"]["rate"]),
                     median(res["conmon"]["rate"]), ""))
        for key in ("cpu", "user", "sys"):
            rows.append((f"{case}: monitor {key} s", median(res["pymon"][key]),
                         median(res["conmon"][key]), "s"))
    print(f"{args.mib} MiB per run, {args.runs} runs each, interleaved"
          + (", one attach client reading" if args.attach else ""))
    print(table(rows))


if __name__ == "__main__":
    main()
