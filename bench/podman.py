"""Real podman with pymon (warm and cold) vs conmon as its conmon_path, same run, interleaved.

    python bench/podman.py [--mode warm|cold|both] [--run-runs 20] [--exec-runs 60]

`podman run --rm IMAGE true` and `podman exec CTR true`, each timed as a whole (wall time
of the podman command), the variants alternating, one containers.conf per variant on one
private storage (--root/--runroot/--tmpdir, runc, the VM's mandatory limits, an image
imported from busybox-static). podman passes only `conmon_env_vars` to its conmon, so the
warm variant's containers.conf sets PYMON_SOCKET there, and the cold variants point it at a
socket nobody listens on. The exec target is started once, with conmon, and each exec
session's monitor is the variant's. Prints medians, pymon/conmon ratios, n.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

from common import CONMON_NAME, Monitor, Monitors, Results, add_mode_argument, banner
from tests.fakes.bundle import make_rootfs

PODMAN = shutil.which("podman") or "/usr/bin/podman"
IMAGE = "localhost/pymon-bench:latest"
LIMITS = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024", "--network", "none")
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # podman's default

CONF = """[engine]
conmon_path = ["{path}"]
conmon_env_vars = [{env}]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "runc"
"""


class Podman:
    def __init__(self, base: Path) -> None:
        self.base = base
        runroot = base / "rr"
        assert len(str(runroot)) <= 50, runroot  # podman 4.3.1 refuses longer runroots
        self.argv0 = [PODMAN, "--root", str(base / "root"), "--runroot", str(runroot),
                      "--tmpdir", str(base / "tmp"), "--runtime", "runc"]
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith("CONTAINERS_") and k != "PYTHONPATH"}

    def conf(self, mon: Monitor) -> Path:
        path = self.base / f"{mon.name.replace(' ', '-').replace('(', '').replace(')', '')}.conf"
        env = [f"PATH={PATH}", *(f"{k}={v}" for k, v in mon.env.items())]
        path.write_text(CONF.format(path=mon.path, env=", ".join(f'"{e}"' for e in env)))
        return path

    def __call__(self, conf: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([*self.argv0, *args], env=dict(self.env, CONTAINERS_CONF=str(conf)),
                              stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)

    def ok(self, conf: Path, *args: str) -> bytes:
        r = self(conf, *args)
        if r.returncode != 0:
            raise RuntimeError(f"podman {' '.join(args)}: {r.returncode} {r.stderr!r}")
        return r.stdout

    def timed(self, conf: Path, *args: str) -> float:
        t0 = time.perf_counter()
        r = self(conf, *args)
        t = time.perf_counter() - t0
        if r.returncode != 0 or r.stderr:
            raise RuntimeError(f"podman {' '.join(args)}: {r.returncode} {r.stderr!r}")
        return t

    def cleanup(self, conf: Path, exclude: frozenset[int] = frozenset()) -> None:
        self(conf, "rm", "-af", "-t", "0")
        # The monitors' exit commands (`podman container cleanup`) may still be running and
        # mount the storage again: wait until no process names our storage, then unmount.
        deadline = time.monotonic() + 30
        while set(_users(self.base)) - exclude and time.monotonic() < deadline:
            time.sleep(0.1)
        with open("/proc/self/mounts") as f:
            points = [line.split()[1] for line in f]
        for point in sorted(points, reverse=True):  # the overlay driver's bind mounts
            if point.startswith(str(self.base) + "/"):
                subprocess.run(["umount", "-l", point], check=False)
        with open("/proc/self/mounts") as f:
            if not any(line.split()[1].startswith(str(self.base) + "/") for line in f):
                shutil.rmtree(self.base, ignore_errors=True)  # nothing mounted there any more


def _users(base: Path) -> list[int]:
    """Processes other than us whose command line names `base` (podman and its helpers,
    and the pymon-server, whose socket is there: the caller excludes it)."""
    needle = os.fsencode(str(base) + "/")
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) != os.getpid():
            try:
                if needle in Path(f"/proc/{name}/cmdline").read_bytes():
                    pids.append(int(name))
            except OSError:
                pass
    return pids


def image_tar(directory: Path) -> Path:
    rootfs = make_rootfs(directory / "image-rootfs")
    tar = directory / "rootfs.tar"
    with tarfile.open(tar, "w") as t:
        for entry in sorted(rootfs.iterdir()):
            t.add(entry, arcname=entry.name)
    return tar


def main() -> None:
    ap = argparse.ArgumentParser()
    add_mode_argument(ap)
    ap.add_argument("--run-runs", type=int, default=20, help="podman run --rm per variant")
    ap.add_argument("--exec-runs", type=int, default=60, help="podman exec per variant")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pbp-", dir="/tmp"))
    mons = Monitors(args.mode, work, verbose_server=True, budget_ms=args.budget_ms)
    podman = Podman(work)
    confs = {m.name: podman.conf(m) for m in mons.list}
    base_conf = confs[CONMON_NAME]
    res = Results()
    try:
        banner(mons, f"podman: run --rm x {args.run_runs}, exec x {args.exec_runs} per variant,"
               " interleaved (rotated each round)")
        podman.ok(base_conf, "import", str(image_tar(work)), IMAGE)
        for mon in mons.list:  # once each, untimed: podman's own first-use costs
            podman.timed(confs[mon.name], "run", "--rm", *LIMITS, IMAGE, "true")
        forked0 = _forked(mons)
        for i in range(args.run_runs):
            for mon in mons.order(i):
                res.add("podman run --rm IMAGE true", mon.name,
                        podman.timed(confs[mon.name], "run", "--rm", *LIMITS, IMAGE, "true") * 1000)
        forked_run = _forked(mons) - forked0
        ctr = podman.ok(base_conf, "run", "-d", *LIMITS, IMAGE, "sleep", "100000").decode().strip()
        for mon in mons.list:
            podman.timed(confs[mon.name], "exec", ctr, "true")
        forked0 = _forked(mons)
        for i in range(args.exec_runs):
            for mon in mons.order(i):
                res.add("podman exec CTR true", mon.name,
                        podman.timed(confs[mon.name], "exec", ctr, "true") * 1000)
        forked_exec = _forked(mons) - forked0
        if mons.server is not None:
            print(f"monitors forked by the server: {forked_run} for {args.run_runs} warm runs, "
                  f"{forked_exec} for {args.exec_runs} warm execs (a launcher that found the "
                  "server too slow would still leave a fork behind, so this is an upper bound)")
            if not mons.server.alive():
                print("WARNING: the server died during the run")
            refused = [line for line in mons.server.lines if "refused" in line]
            if refused:
                print(f"server refusals: {len(refused)}, e.g. {refused[0]}")
        print(res.table(mons.names))
    finally:
        podman.cleanup(base_conf, frozenset([mons.server.pid] if mons.server else []))
        mons.close()


def _forked(mons: Monitors) -> int:
    if mons.server is None:
        return 0
    return sum("forked monitor" in line for line in list(mons.server.lines))


if __name__ == "__main__":
    main()
