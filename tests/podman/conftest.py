"""End-to-end fixtures: real podman 4.3.1 with pymon as its conmon.

Every podman call uses a private --root/--runroot/--tmpdir (so nothing is shared with the
host's podman or with another session), CONTAINERS_CONF pointing at a containers.conf whose
conmon_path is pymon's production entry point (`python -m pymon.entrypoint DEST`: the C
launcher), and runc. A local busybox image is imported once per session and mode.

Every test runs twice: cold (PYMON_SOCKET empty: the launcher execs `python -IS -c ...`)
and warm (a pymon-server, whose socket containers.conf passes to the monitor through
conmon_env_vars, as the README tells users to do).

After each test every container is removed and no pymon monitor may be left: `pgrep -f
<entry point>` (cold) and the server's children (warm) must find nothing (each found pid
is awaited with a pidfd, bounded).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fakes.bundle import BUSYBOX, RUNC, make_rootfs
from tests.fakes.engine import monitors_of, ppid, wait_pid_gone
from tests.fakes.journal import PrivateJournal
from tests.fakes.journal import available as journald_available
from tests.fakes.server import WarmServer

REPO = Path(__file__).resolve().parents[2]
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
PODMAN = shutil.which("podman")
IMAGE = "localhost/busybox:latest"
# The VM refuses higher limits and has no network; every run/create needs these.
LIMITS = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024", "--network", "none")
# applets the podman tests use beyond tests.fakes.bundle.APPLETS
EXTRA_APPLETS = ("readlink",)
RUNC_ROOT = "/run/runc"  # podman (root) does not pass --root to runc

CONTAINERS_CONF = """[engine]
conmon_path = ["{entry}"]
conmon_env_vars = [{env}]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "runc"
"""


def podman_available() -> bool:
    return (os.geteuid() == 0 and PODMAN is not None and os.path.exists(RUNC)
            and os.path.exists(BUSYBOX))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "podman: needs root, podman 4.3.1, runc and busybox-static")


class Podman:
    """podman with private storage; calls return CompletedProcess (bytes) or Popen."""

    def __init__(self, base: Path, conf: Path, prefix: list[str] | tuple[str, ...] = (),
                 runtime: str = "runc") -> None:
        self.base = base
        self.root, self.runroot, self.tmpdir = base / "root", base / "runroot", base / "tmp"
        # podman 4.3.1: "the specified runroot is longer than 50 characters"
        assert len(str(self.runroot)) <= 50, f"{self.runroot}: use a shorter --basetemp"
        self.prefix = list(prefix)
        self.argv0 = [*self.prefix, PODMAN or "podman", "--root", str(self.root),
                      "--runroot", str(self.runroot), "--tmpdir", str(self.tmpdir),
                      "--runtime", runtime]
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CONTAINERS_")}
        self.env["CONTAINERS_CONF"] = str(conf)

    def argv(self, *args: str) -> list[str]:
        return [*self.argv0, *args]

    def __call__(self, *args: str, input: bytes | None = None, timeout: float = 60,
                 stdin: object = None) -> subprocess.CompletedProcess[bytes]:
        if input is None and stdin is None:
            stdin = subprocess.DEVNULL
        return subprocess.run(self.argv(*args), input=input, stdin=stdin,  # type: ignore[arg-type]
                              capture_output=True, env=self.env, timeout=timeout)

    def ok(self, *args: str, timeout: float = 60) -> bytes:
        """Run; it must exit 0 with nothing on stderr. Returns stdout."""
        r = self(*args, timeout=timeout)
        assert (r.returncode, r.stderr) == (0, b""), (args, r)
        return r.stdout

    def popen(self, *args: str, **kwargs: object) -> subprocess.Popen[bytes]:
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.Popen(self.argv(*args), env=self.env,  # type: ignore[call-overload]
                                **kwargs)

    # `podman run`/`create` with the VM's mandatory options in front
    def run(self, *args: str, **kwargs: object) -> subprocess.CompletedProcess[bytes]:
        return self("run", *LIMITS, *args, **kwargs)  # type: ignore[arg-type]

    def run_d(self, *args: str) -> str:
        """`podman run -d`; returns the full container id."""
        out = self.ok("run", "-d", *LIMITS, *args)
        assert re.fullmatch(rb"[0-9a-f]{64}\n", out), out
        return out.decode().strip()

    def inspect(self, ctr: str, fmt: str) -> str:
        return self.ok("inspect", "--format", fmt, ctr).decode().removesuffix("\n")

    def wait_for(self, ctr: str, fmt: str, want: str | tuple[str, ...],
                 timeout: float = 20) -> None:
        """Poll `podman inspect` (there is no event to await) until fmt renders to want
        (or to one of them)."""
        wanted = (want,) if isinstance(want, str) else want
        deadline = time.monotonic() + timeout
        while (got := self.inspect(ctr, fmt)) not in wanted:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{ctr}: {fmt} is {got!r}, wanted {want!r}")
            time.sleep(0.05)

    def wait_logs(self, ctr: str, want: bytes, timeout: float = 20) -> None:
        """Poll `podman logs` until its stdout contains `want`."""
        deadline = time.monotonic() + timeout
        while want not in (out := self("logs", ctr).stdout):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{ctr}: logs {out!r:.300} lack {want!r}")
            time.sleep(0.05)

    def remove_all(self) -> subprocess.CompletedProcess[bytes]:
        return self("rm", "-af", "-t", "0", timeout=120)


class Monitors:
    """pymon monitor processes: cold ones by the entry point path in their command line
    (the C launcher's bootstrap names it), warm ones as the server's children."""

    def __init__(self, entry: Path, server: WarmServer | None = None) -> None:
        self.entry = entry
        self.server = server
        # pgrep takes an extended regular expression
        self.pattern = re.sub(r"([.^$*+?()\[\]{}|\\])", r"\\\1", str(entry))

    def pids(self) -> set[int]:
        r = subprocess.run(["pgrep", "-f", self.pattern], capture_output=True, timeout=10)
        assert r.returncode in (0, 1), r
        found = {int(p) for p in r.stdout.split()}
        if self.server is not None:  # its spare is nobody's monitor yet
            found |= set(monitors_of(self.server.pid))
        return found - {os.getpid()}

    def monitor_pids(self) -> set[int]:
        """Like pids(), without children of a monitor that have not exec'd yet (they carry
        the monitor's command line: the runtime, the exit command, or the `ldconfig -p`
        that importing trio spawns through ctypes.util.find_library)."""
        pids = self.pids()
        return {pid for pid in pids if ppid(pid) not in pids}

    def wait_until(self, expected: set[int], timeout: float = 20) -> set[int]:
        """Wait (pidfds) until the running monitors are exactly `expected`; returns what is
        left over if the time runs out (empty set on success)."""
        deadline = time.monotonic() + timeout
        while True:
            extra = self.pids() - expected
            if not extra:
                return set()
            left = deadline - time.monotonic()
            if left <= 0:
                return extra
            try:
                for pid in extra:
                    wait_pid_gone(pid, max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                pass

    def describe(self, pids: set[int]) -> str:
        out = []
        for pid in sorted(pids):
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except FileNotFoundError:
                continue
            try:
                status = dict(line.split(":\t", 1) for line in
                              Path(f"/proc/{pid}/status").read_text().splitlines() if ":\t" in line)
                extra = "".join(f" {k}={status.get(k, '?').strip()}"
                                for k in ("State", "PPid", "Threads"))
            except OSError:
                extra = ""
            out.append(f"{pid}:{extra} {b' '.join(argv)[:300]!r}")
        return "\n".join(out)

    def assert_is_monitor(self, pid: int, cid: str, session: str | None = None,
                          warm: bool | None = None) -> None:
        """`pid` is pymon's monitor for container `cid`: warm, a child of the server; cold,
        the launcher's exec of `python -IS -c BOOTSTRAP ... # ENTRY` with the container's
        argv. `warm` defaults to whether there is a server."""
        if warm is None:
            warm = self.server is not None
        if warm:
            assert self.server is not None and ppid(pid) == self.server.pid, \
                f"{pid} is not the server's child: {self.describe({pid})}"
            return
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]
        argv_s = [a.decode() for a in argv]
        assert argv_s[:3] == [str(VENV_PYTHON.absolute()), "-IS", "-c"], argv_s[:3]
        assert argv_s[3].endswith(f"# {self.entry}"), argv_s[3]
        args = argv_s[4:]
        assert args[args.index("-c") + 1] == cid
        assert args[args.index("-u") + 1] == (session or cid)


@pytest.fixture(scope="session")
def pymon_entry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The production entry point, written by `python -m pymon.entrypoint DEST`."""
    if not podman_available():
        pytest.skip("needs root, podman, runc and busybox-static")
    dest = tmp_path_factory.mktemp("pymon-bin") / "pymon"
    subprocess.run([str(VENV_PYTHON), "-m", "pymon.entrypoint", str(dest)], check=True,
                   cwd=REPO, timeout=120)
    assert dest.read_bytes().startswith(b"\x7fELF"), "the C launcher was not built"
    return dest


@pytest.fixture(scope="session", params=["cold", "warm"])
def podman_mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def podman_server(podman_mode: str, pymon_entry: Path,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[WarmServer | None]:
    if podman_mode == "cold":
        yield None
        return
    server = WarmServer(tmp_path_factory.mktemp("srv") / "server.sock")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def containers_conf(tmp_path_factory: pytest.TempPathFactory, pymon_entry: Path,
                    podman_server: WarmServer | None) -> Path:
    conf = tmp_path_factory.mktemp("conf") / "containers.conf"
    env = {"PYMON_SOCKET": ""} if podman_server is None else podman_server.env()
    conf.write_text(CONTAINERS_CONF.format(
        entry=pymon_entry, env=", ".join(f'"{k}={v}"' for k, v in env.items())))
    return conf


@pytest.fixture(scope="session")
def image_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A busybox-static rootfs as a tar, for `podman import`."""
    base = tmp_path_factory.mktemp("image")
    rootfs = make_rootfs(base / "rootfs")
    for applet in EXTRA_APPLETS:
        (rootfs / "bin" / applet).symlink_to("busybox")
    tar = base / "rootfs.tar"
    with tarfile.open(tar, "w") as t:
        for entry in sorted(rootfs.iterdir()):
            t.add(entry, arcname=entry.name)
    return tar


def import_image(podman: Podman, tar: Path) -> None:
    r = podman("import", str(tar), IMAGE, timeout=120)
    assert r.returncode == 0, r
    assert re.fullmatch(rb"sha256:[0-9a-f]{64}\n", r.stdout), r


@pytest.fixture(scope="session")
def monitors(pymon_entry: Path, podman_server: WarmServer | None) -> Monitors:
    return Monitors(pymon_entry, podman_server)


@pytest.fixture(scope="session")
def podman_session(tmp_path_factory: pytest.TempPathFactory, containers_conf: Path,
                   image_tar: Path, pymon_entry: Path) -> Iterator[Podman]:
    podman = Podman(tmp_path_factory.mktemp("podman"), containers_conf)
    import_image(podman, image_tar)
    # Once per session: podman itself reports pymon as its conmon.
    info = podman.ok("info", "--format", "{{.Host.Conmon.Path}}|{{.Host.Conmon.Version}}")
    assert info == f"{pymon_entry}|conmon version 2.2.1, commit: pymon 0.1.0\n".encode()
    yield podman
    r = podman.remove_all()
    assert r.returncode == 0, r
    assert runc_leftovers(podman) == []
    unmount_storage(podman)


def unmount_storage(podman: Podman) -> None:
    """podman's overlay driver leaves its storage directory bind-mounted on itself: a
    test leaves no mount behind."""
    with open("/proc/self/mounts") as f:
        points = [line.split()[1] for line in f]
    for point in sorted(points, reverse=True):  # deepest first
        if point.startswith(str(podman.base) + "/"):
            subprocess.run(["umount", "-l", point], check=True, timeout=30)


def runc_leftovers(podman: Podman) -> list[dict]:
    """runc containers whose bundle is in this podman's storage (podman, as root, leaves
    runc's state in its default root)."""
    for _ in range(20):
        listing = subprocess.run([RUNC, "--root", RUNC_ROOT, "list", "--format", "json"],
                                 capture_output=True, timeout=30)
        # `runc list` fails when a container (anyone's) is deleted while it lists: again
        if listing.returncode == 0 or b"no such file or directory" not in listing.stderr:
            break
    assert listing.returncode == 0, listing
    return [c for c in (json.loads(listing.stdout) or [])
            if str(c.get("bundle", "")).startswith(str(podman.base) + "/")]


def _cleanup(podman: Podman, monitors: Monitors) -> None:
    r = podman.remove_all()
    assert r.returncode == 0, r
    assert runc_leftovers(podman) == []
    left = monitors.wait_until(set(), timeout=20)
    if left:
        described = monitors.describe(left)
        for pid in left:  # do not let them spoil the next test; they are ours
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        pytest.fail(f"pymon monitors left after the test:\n{described}")


@pytest.fixture
def podman(podman_session: Podman, monitors: Monitors) -> Iterator[Podman]:
    """The session's podman; afterwards every container is removed and no pymon monitor
    may remain."""
    left = monitors.pids()
    assert not left, f"monitors running before the test:\n{monitors.describe(left)}"
    yield podman_session
    _cleanup(podman_session, monitors)


@pytest.fixture
def other_podman(podman: Podman, tmp_path_factory: pytest.TempPathFactory, containers_conf: Path,
                 image_tar: Path, monitors: Monitors) -> Iterator[Callable[..., Podman]]:
    """Makes podmans with their own storage (and e.g. another --runtime); each is cleaned
    up like the session's."""
    made: list[Podman] = []

    def make(**kwargs: object) -> Podman:
        p = Podman(tmp_path_factory.mktemp("xpm"), containers_conf, **kwargs)  # type: ignore[arg-type]
        import_image(p, image_tar)
        made.append(p)
        return p

    yield make
    for p in made:
        _cleanup(p, monitors)
        unmount_storage(p)


@pytest.fixture
def journald_podman(podman: Podman, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory,
                    containers_conf: Path, image_tar: Path,
                    monitors: Monitors) -> Iterator[tuple[Podman, PrivateJournal]]:
    """podman (and so pymon) running in the mount namespace of a private journald (so both
    see its socket), with its own storage: mounts made in that namespace are not visible
    outside it, so it must not share the session's storage."""
    assert journald_available(), "systemd-journald and unshare are needed"
    journal = PrivateJournal(tmp_path / "journald.log")
    try:
        jpodman = Podman(tmp_path_factory.mktemp("jpm"), containers_conf, prefix=journal.prefix)
        import_image(jpodman, image_tar)
        yield jpodman, journal
        _cleanup(jpodman, monitors)
    finally:
        journal.stop()

