"""Shared fixtures: a busybox-static rootfs, OCI bundles for real runc, and cleanup that
guarantees no container or monitor outlives its test."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.bundle import BUSYBOX, RUNC, make_rootfs, runc_spec, write_bundle
from tests.fakes.engine import Session, kill_if_alive, ppid
from tests.fakes.server import WarmServer


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    can_run = os.geteuid() == 0 and os.path.exists(RUNC) and os.path.exists(BUSYBOX)
    for item in items:
        if "integration" in item.nodeid.split("/"):
            item.add_marker(pytest.mark.integration)
            if not can_run:
                item.add_marker(pytest.mark.skip(reason="needs root, runc and busybox-static"))


@pytest.fixture(scope="session")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_rootfs(tmp_path_factory.mktemp("rootfs"))


@pytest.fixture(scope="session")
def base_spec(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return runc_spec(tmp_path_factory.mktemp("spec"))


class Bundles:
    """Makes bundle directories whose config.json runs `args` on the shared rootfs."""

    def __init__(self, root: Path, rootfs: Path, spec: dict) -> None:
        self.root, self.rootfs, self.spec = root, rootfs, spec
        self.count = 0

    def make(self, args: list[str], **kwargs: object) -> Path:
        self.count += 1
        return write_bundle(self.root / f"b{self.count}", self.rootfs, self.spec, args,
                            **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def bundles(tmp_path: Path, rootfs: Path, base_spec: dict) -> Bundles:
    return Bundles(tmp_path, rootfs, base_spec)


class Launcher:
    """Starts pymon sessions and cleans up every container and monitor they made. With a
    `server`, launches are warm: the monitor is forked by it (checked for every launch
    that reports a monitor pid); without, PYMON_SOCKET is empty and they run cold."""

    def __init__(self, tmp: Path, server: WarmServer | None = None) -> None:
        self.tmp = tmp
        self.server = server
        self.sessions: list[Session] = []
        self.cids: list[str] = []

    @property
    def mode(self) -> str:
        return "cold" if self.server is None else "warm"

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ if base is None else base)
        env.update(self.server.env() if self.server is not None else {"PYMON_SOCKET": ""})
        return env

    def new_cid(self) -> str:
        cid = "pymon-test-" + uuid.uuid4().hex[:16]
        self.cids.append(cid)
        return cid

    def launch(self, argv: list[str], **kwargs: object) -> Session:
        kwargs["env"] = self.env(kwargs.get("env"))  # type: ignore[arg-type]
        session = Session(argv, **kwargs)  # type: ignore[arg-type]
        self.sessions.append(session)
        return session

    def create(self, bundle: Path, *extra: str, log: str | None = None,
               exit_command: list[str] | None = None, runtime: str = RUNC,
               **kwargs: object) -> tuple[Session, Paths]:
        """Launch pymon for `runtime create` with podman 4.3.1's argv shape."""
        cid = self.new_cid()
        paths = Paths(bundle, cid)
        paths.exits.mkdir(exist_ok=True)
        argv = ["--api-version", "1", "-c", cid, "-u", cid, "-r", runtime, "-b", str(bundle),
                "-p", str(paths.pidfile), "-n", "test-" + cid[-6:],
                "--exit-dir", str(paths.exits), "--full-attach",
                "-l", log if log is not None else f"k8s-file:{paths.log}",
                "--log-level", "warning", "--conmon-pidfile", str(paths.conmon_pidfile)]
        if exit_command:
            argv += ["--exit-command", exit_command[0]]
            for a in exit_command[1:]:
                argv += ["--exit-command-arg", a]
        argv += extra
        kwargs.setdefault("conmon_pidfile", str(paths.conmon_pidfile))
        return self.launch(argv, **kwargs), paths

    def create_ok(self, bundle: Path, *extra: str, **kwargs: object) -> tuple[Session, Paths]:
        """`create`, then check the first process exited 0 and the engine got a pid."""
        session, paths = self.create(bundle, *extra, **kwargs)  # type: ignore[arg-type]
        assert session.wait_p0() == 0, session.p0_stderr
        msg = json.loads(session.read_sync())
        assert msg["data"] > 0, msg
        self.check_mode(session)
        return session, paths

    def check_mode(self, session: Session) -> None:
        """The monitor was forked by the server in warm mode, and not in cold mode. A
        launch through a wrapper (a private journald's mount namespace) is refused by the
        server, and so cold, in both."""
        parent = ppid(session.monitor_pid)
        if self.server is not None and not session.wrapper:
            assert parent == self.server.pid, (
                f"monitor's parent {parent} is not the server; launcher: "
                f"{session.p0_stderr!r}; server: {self.server.said()[-2000:]}")
        else:
            assert parent != session.p0.pid

    def cleanup(self) -> None:
        for s in self.sessions:
            if s.conmon_pidfile and os.path.exists(s.conmon_pidfile):
                kill_if_alive(s.monitor_pid)
            s.close()
        for cid in self.cids:
            subprocess.run([RUNC, "delete", "--force", cid], capture_output=True)


class Paths:
    """Where a launch's files go."""

    def __init__(self, bundle: Path, cid: str) -> None:
        self.bundle, self.cid = bundle, cid
        self.pidfile = bundle / "pidfile"
        self.conmon_pidfile = bundle / "conmon.pid"
        self.exits = bundle / "exits"
        self.exit_file = self.exits / cid
        self.log = bundle / "ctr.log"


@pytest.fixture(scope="session")
def warm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WarmServer]:
    """One pymon-server for the session's warm tests (started on first use)."""
    server = WarmServer(tmp_path_factory.mktemp("server") / "server.sock")
    yield server
    server.stop()


@pytest.fixture(params=["cold", "warm"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def launcher(tmp_path: Path, mode: str, request: pytest.FixtureRequest) -> Iterator[Launcher]:
    server = request.getfixturevalue("warm_server") if mode == "warm" else None
    launcher = Launcher(tmp_path, server)
    yield launcher
    launcher.cleanup()
