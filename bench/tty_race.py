"""The `podman run -it` size race, pymon against conmon under CPU load.

podman 4.3.1 writes the terminal size (`1 ROWS COLS` on the ctl fifo, from a goroutine)
as it attaches, after it has the container pid and concurrently with its `runc start`. The
container's first instruction here is `stty size`: it sees the size only if the monitor
has read ctl and resized the pty by then. Each round runs one container under each
monitor (the variants of bench/common.py: `--mode warm|cold|both`, conmon always; the order
rotates every round), with busy loops on every core for the whole window, and counts the
runs whose first instruction saw another size than ours.

    .venv/bin/python bench/tty_race.py -n 200            # as root; prints the counts
    .venv/bin/python bench/tty_race.py -n 20 --load 0    # the same on an idle machine

podman runs as in tests/podman (private --root/--runroot/--tmpdir, runc, the VM's ulimits,
no network, a local busybox image). The load is `stress --cpu N` if installed, else N
Python busy loops; it runs only while containers are being run.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import termios
import time
from collections import Counter
from pathlib import Path
from typing import Self

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Monitor, Monitors, add_mode_argument
from tests.fakes.bundle import make_rootfs
from tests.podman.conftest import (
    CONTAINERS_CONF,
    IMAGE,
    LIMITS,
    Podman,
    import_image,
    unmount_storage,
)

ROWS, COLS = 40, 132
WANT = f"{ROWS} {COLS}\r\n".encode()
RUN_TIMEOUT = 60.0


def image_tar(base: Path) -> Path:
    import tarfile

    rootfs = make_rootfs(base / "rootfs")
    tar = base / "rootfs.tar"
    with tarfile.open(tar, "w") as t:
        for entry in sorted(rootfs.iterdir()):
            t.add(entry, arcname=entry.name)
    return tar


def make_podman(base: Path, monitor: Monitor, tar: Path) -> Podman:
    base.mkdir()
    conf = base / "containers.conf"
    env = ", ".join(f'"{k}={v}"' for k, v in monitor.env.items())  # PYMON_SOCKET
    conf.write_text(CONTAINERS_CONF.format(entry=monitor.path, env=env))
    podman = Podman(base, conf)
    import_image(podman, tar)
    return podman


def run_once(podman: Podman) -> tuple[bytes, int | None, float]:
    """`podman run -it IMAGE stty size` on a pty of our size: (its output, podman's exit
    status or None on timeout, seconds taken)."""
    master, slave = os.openpty()
    fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
    t0 = time.monotonic()
    proc = podman.popen("run", "-it", *LIMITS, IMAGE, "stty", "size",
                        stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)  # podman holds the only slave fds: EIO on the master once it exits
    out = b""
    deadline = t0 + RUN_TIMEOUT
    try:
        while (left := deadline - time.monotonic()) > 0:
            if not select.select([master], [], [], left)[0]:
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: podman has exited
                break
            if not data:
                break
            out += data
        try:
            status: int | None = proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            status = None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return out, status, time.monotonic() - t0


def classify(out: bytes, status: int | None) -> str:
    if status == 0 and out == WANT:
        return "ok"
    if status == 0 or status == 1 and b"stty" in out:
        return "wrong size"  # another size, or 0x0 ("stty: standard input: ...")
    return "failed"


class Load:
    """Busy loops on `n` cores, for the measured window only."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        if self.n > 0:
            stress = shutil.which("stress")
            loops = f"import os\nfor _ in range({self.n} - 1): os.fork()\nwhile True: pass"
            argv = [stress, "--cpu", str(self.n)] if stress else [sys.executable, "-c", loops]
            self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL, start_new_session=True)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # its own group: the loops it forked
            self.proc.wait()
            self.proc = None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=200, help="runs per monitor")
    ap.add_argument("--load", type=int, default=os.cpu_count() or 2,
                    help="busy loops (default: one per core; 0 for none)")
    add_mode_argument(ap)
    ap.add_argument("--monitor", action="append", default=[], metavar="NAME=PATH",
                    help="another monitor to run, e.g. an older pymon's entry point "
                         "(python -m pymon.entrypoint), with no server")
    ap.add_argument("--json", help="also write every run's result here")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("tty_race: needs root (podman with private storage)")

    work = Path(tempfile.mkdtemp(prefix="ttyr-", dir="/tmp"))  # podman: runroot <= 50 chars
    tar = image_tar(work)
    mons = Monitors(args.mode, work, budget_ms=args.budget_ms)
    nowhere = str(work / "no-server.sock")
    variants = mons.list + [Monitor(name, path, {"PYMON_SOCKET": nowhere})
                            for name, path in (m.split("=", 1) for m in args.monitor)]
    names = [m.name for m in variants]
    podmans: dict[str, Podman] = {}
    results: dict[str, list[tuple[str, bytes, float]]] = {name: [] for name in names}
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # so that the load is stopped
    try:
        for i, m in enumerate(variants):  # short dirs: podman's runroot <= 50 chars
            podmans[m.name] = make_podman(work / f"m{i}", m, tar)
        t0 = time.monotonic()
        with Load(args.load):
            for i in range(args.n):
                k = i % len(names)  # rotated each round: no variant always first or last
                for name in names[k:] + names[:k]:
                    out, status, took = run_once(podmans[name])
                    results[name].append((classify(out, status), out, took))
        window = time.monotonic() - t0
    finally:
        for podman in podmans.values():
            podman.remove_all()
            unmount_storage(podman)
        mons.close()
        shutil.rmtree(work, ignore_errors=True)

    print(f"{args.n} runs per monitor, {args.load} busy loops, {window:.0f} s under load")
    width = max(map(len, names))
    for name in names:
        counts = Counter(kind for kind, _, _ in results[name])
        times = sorted(t for _, _, t in results[name])
        bad = [out for kind, out, _ in results[name] if kind != "ok"]
        print(f"{name:{width}s} wrong size {counts['wrong size']:4d}/{args.n}  failed "
              f"{counts['failed']:3d}  median run {times[len(times) // 2]:.2f} s"
              + (f"  e.g. {Counter(bad).most_common(2)}" if bad else ""))
    if args.json:
        Path(args.json).write_text(json.dumps(
            {name: [(kind, out.decode(errors="replace"), took) for kind, out, took in rs]
             for name, rs in results.items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
