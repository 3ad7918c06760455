"""Two costs of this machine that move pymon's ratios to conmon more than pymon's code does.

Wake-ups. A warm launch wakes more processes than conmon's: the server when the launcher
connects, the launcher for "running", "detached" or "exited" (the token hand-over of
protocol 2 has no answer to wait for before the fork). Each wakes a process sleeping on
another CPU. On a virtual machine whose idle vCPUs are halted in the host, that can take
milliseconds instead of microseconds; the start-up ratios then measure it, and a server
that has not taken the token within the launcher's 2 ms budget sends the launch cold.

Fresh pages. A forked monitor copies ~700 of the server's pages; conmon touches ~80 of
its own. Where the guest hands its free memory back to the host (virtio-balloon free page
reporting), the first write to a page the kernel takes from that memory faults in the host
too, and costs several times what it costs otherwise; more so after the machine was quiet.

Run this next to the start-up and ExecSync benches, and quote it with their figures.
"""

from __future__ import annotations

import argparse
import mmap
import os
import statistics
import time

PAGE = mmap.PAGESIZE
WAKE_GAPS = (0.0, 0.002, 0.02, 0.05, 0.2)  # seconds of idleness before each round trip
FAULT_GAPS = (0.0, 0.0, 0.5, 3.0)  # seconds of idleness before each pass over fresh memory
FAULT_MIB = 16


def round_trips(cpus: tuple[int, int], gap: float, count: int) -> list[float]:
    """`count` one-byte round trips over two pipes, each after `gap` seconds of sleep, from
    this process pinned to cpus[0] to a child pinned to cpus[1]; in seconds."""
    ping_r, ping_w = os.pipe()
    pong_r, pong_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.sched_setaffinity(0, {cpus[1]})
            while os.read(ping_r, 1) == b"x":
                os.write(pong_w, b"x")
        finally:
            os._exit(0)
    everywhere = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {cpus[0]})
        out = []
        for _ in range(count):
            if gap:
                time.sleep(gap)
            start = time.perf_counter()
            os.write(ping_w, b"x")
            os.read(pong_r, 1)
            out.append(time.perf_counter() - start)
        return out
    finally:
        os.write(ping_w, b"q")
        os.waitpid(pid, 0)
        for fd in (ping_r, ping_w, pong_r, pong_w):
            os.close(fd)
        os.sched_setaffinity(0, everywhere)


def fresh_page_cost(mib: int) -> float:
    """Seconds per page for the first write to each page of a new anonymous mapping."""
    m = mmap.mmap(-1, mib << 20)
    try:
        start = time.perf_counter()
        for offset in range(0, mib << 20, PAGE):
            m[offset] = 1
        return (time.perf_counter() - start) / ((mib << 20) // PAGE)
    finally:
        m.close()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=40, help="round trips per idle gap")
    args = ap.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    pairs = [("two CPUs", (cpus[0], cpus[1]))] if len(cpus) > 1 else []
    pairs.append(("one CPU", (cpus[0], cpus[0])))
    print(f"{len(cpus)} cpus, load {os.getloadavg()[0]:.2f}")
    print(f"wake-up: a one-byte round trip between two processes, {args.count} per gap (us)")
    print(f"{'idle before':>12}" + "".join(f"{name + ' median':>18}{'p90':>8}"
                                          for name, _ in pairs))
    for gap in WAKE_GAPS:
        row = f"{gap * 1000:9.0f} ms"
        for _, pair in pairs:
            times = round_trips(pair, gap, args.count)
            row += f"{statistics.median(times) * 1e6:18.0f}{percentile(times, 0.9) * 1e6:8.0f}"
        print(row)
    print(f"fresh pages: first write to each page of a new {FAULT_MIB} MiB mapping (us/page)")
    for gap in FAULT_GAPS:
        time.sleep(gap)
        print(f"{gap * 1000:9.0f} ms idle before: {fresh_page_cost(FAULT_MIB) * 1e6:6.2f}")


if __name__ == "__main__":
    main()
