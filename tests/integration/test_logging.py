"""Log drivers with real containers: journald (a private real journald), multiple drivers,
none, passthrough, reopen via ctl, the final drain, and log-file faults."""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pymon import _native
from tests.conftest import RUNC, Bundles, Launcher
from tests.fakes.attach_client import connect, read_until_eof
from tests.fakes.engine import PYMON, wait_for
from tests.fakes.journal import PrivateJournal, available
from tests.fakes.syslog import PrivateSyslog
from tests.integration.test_lifecycle import parse_log, runc_start

pytestmark = pytest.mark.timeout(90)
MIB = 1 << 20


@pytest.fixture(scope="module")
def journal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateJournal]:
    if not available():
        pytest.fail("systemd-journald and unshare are needed (scripts/setup.sh installs them)")
    j = PrivateJournal(tmp_path_factory.mktemp("journal") / "journald.log")
    yield j
    j.stop()


def message(entry: dict) -> bytes:
    value = entry["MESSAGE"]
    return bytes(value) if isinstance(value, list) else value.encode()


def test_journald_entries(bundles: Bundles, launcher: Launcher, journal: PrivateJournal) -> None:
    bundle = bundles.make(["sh", "-c", "echo out; echo err >&2; printf 'par'; sleep 0.1; "
                                       "printf 'tial\\n'; printf tail"])
    session, paths = launcher.create_ok(bundle, "--log-tag", "tagged", "-l", "journald",
                             log=f"k8s-file:{bundle}/ctr.log", wrapper=journal.prefix)
    runc_start(paths.cid)
    session.wait_monitor()
    entries = journal.entries(4, f"CONTAINER_ID_FULL={paths.cid}")
    by_msg = {message(e): e for e in entries}
    assert set(by_msg) == {b"out\n", b"err\n", b"partial\n", b"tail"}
    out = by_msg[b"out\n"]
    assert out["PRIORITY"] == "6" and by_msg[b"err\n"]["PRIORITY"] == "3"
    assert out["CONTAINER_ID"] == paths.cid[:12]
    assert out["CONTAINER_TAG"] == "tagged" and out["SYSLOG_IDENTIFIER"] == "tagged"
    assert out["CONTAINER_NAME"].startswith("test-")
    assert "CONTAINER_PARTIAL_MESSAGE" not in by_msg[b"partial\n"]  # joined across reads
    assert by_msg[b"tail"]["CONTAINER_PARTIAL_MESSAGE"] == "true"  # flushed at exit
    # k8s-file alongside journald got the same output
    recs = parse_log(paths.log.read_bytes())
    assert b"".join(r[2] + (b"\n" if r[1] == b"F" else b"") for r in recs if r[0] == b"stdout") \
        == b"out\npartial\ntail"


def test_journald_labels_and_long_line(bundles: Bundles, launcher: Launcher,
                                       journal: PrivateJournal) -> None:
    bundle = bundles.make(["sh", "-c", "head -c 65535 /dev/zero | tr '\\0' x"])
    session, paths = launcher.create_ok(bundle, "--log-label", "APP=web",
                             "--log-label", "TEAM_1=blue", log="journald", wrapper=journal.prefix)
    runc_start(paths.cid)
    session.wait_monitor()
    entries = journal.entries(8, f"CONTAINER_ID_FULL={paths.cid}")
    assert b"".join(message(e) for e in entries) == b"x" * 65535
    assert all(e["CONTAINER_PARTIAL_MESSAGE"] == "true" for e in entries)
    assert all(e["APP"] == "web" and e["TEAM_1"] == "blue" for e in entries)
    assert not paths.log.exists()


def test_journald_short_cid_is_rejected(tmp_path: Path) -> None:
    res = subprocess.run([*PYMON, "-c", "short", "-u", "u", "-r", RUNC, "-l", "journald"],
                         capture_output=True, text=True, timeout=20, cwd=str(tmp_path))
    assert res.returncode == 1
    assert res.stderr == "[conmon:e]: Container ID must be longer than 12 characters\n"


def test_none_driver_still_serves_attach(bundles: Bundles, launcher: Launcher) -> None:
    bundle = bundles.make(["echo", "to-attach-only"])
    session, paths = launcher.create_ok(bundle, log="none")
    sock = connect(bundle / "attach")
    runc_start(paths.cid)
    assert bytes(read_until_eof(sock).data["stdout"]) == b"to-attach-only\n"
    session.wait_monitor()
    assert not paths.log.exists() and (bundle / "ctl").exists()


def test_passthrough_gives_the_runtime_our_stdio(bundles: Bundles, launcher: Launcher,
                                                 tmp_path: Path) -> None:
    bundle = bundles.make(["sh", "-c", "echo straight-through; echo err-through >&2"])
    out, err = tmp_path / "out", tmp_path / "err"
    with open(out, "wb") as o, open(err, "wb") as e:
        session, paths = launcher.create_ok(bundle, log="passthrough", stdout=o, stderr=e)
    assert not (bundle / "attach").exists() and not (bundle / "ctl").exists()
    runc_start(paths.cid)
    session.wait_monitor()
    assert out.read_bytes() == b"straight-through\n"
    assert err.read_bytes() == b"err-through\n"
    assert paths.exit_file.read_text() == "0"


def test_reopen_via_ctl_after_rename(bundles: Bundles, launcher: Launcher) -> None:
    bundle = bundles.make(["sh", "-c", "read a; echo first; read b; echo second"])
    session, paths = launcher.create_ok(bundle, "-i")
    sock = connect(bundle / "attach")
    runc_start(paths.cid)
    sock.send(b"go\n")
    read_until_eof(sock, until=b"first\n")
    old = bundle / "ctr.log.rotated"
    paths.log.rename(old)
    with open(bundle / "ctl", "w") as ctl:
        ctl.write("2 0 0\n")
    wait_for(paths.log.exists, what="the reopened log")  # created by the reopen
    sock.send(b"go\n")
    read_until_eof(sock)
    session.wait_monitor()
    assert [r[2] for r in parse_log(old.read_bytes())] == [b"first"]
    assert [r[2] for r in parse_log(paths.log.read_bytes())] == [b"second"]


def test_rotation_with_max_files(bundles: Bundles, launcher: Launcher) -> None:
    bundle = bundles.make(["sh", "-c", "for i in $(seq 1 40); do echo line-$i; done"])
    session, paths = launcher.create_ok(bundle, "--log-size-max", "300", "--log-rotate",
                             "--log-max-files", "2")
    runc_start(paths.cid)
    session.wait_monitor()
    files = [Path(f"{paths.log}.2"), Path(f"{paths.log}.1"), paths.log]
    lines = [r[2] for f in files for r in parse_log(f.read_bytes())]
    assert not Path(f"{paths.log}.3").exists()
    assert all(f.stat().st_size <= 300 for f in files)
    # the kept files hold the newest lines, in order, none split
    assert lines == [b"line-%d" % i for i in range(41 - len(lines), 41)]


def watch_exit_file(exit_dir: Path, log: Path) -> tuple[threading.Thread, dict[str, int]]:
    """Record the log's size at the moment the exit file appears (inotify, no polling)."""
    fd = _native.inotify_init()
    _native.inotify_add_watch(fd, str(exit_dir), _native.IN_MOVED_TO | _native.IN_CREATE)
    os.set_blocking(fd, True)
    seen: dict[str, int] = {}

    def run() -> None:
        try:
            while not seen:
                for _, _, name in _native.inotify_events(os.read(fd, 4096)):
                    if "." not in name:  # the renamed exit file, not its temp file
                        seen["log_size"] = log.stat().st_size
        finally:
            os.close(fd)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, seen


def test_every_byte_is_logged_before_the_exit_file(bundles: Bundles, launcher: Launcher) -> None:
    total = 64 * MIB
    bundle = bundles.make(["sh", "-c", f"head -c {total} /dev/zero | tr '\\0' 'z'"])
    session, paths = launcher.create_ok(bundle)
    thread, seen = watch_exit_file(paths.exits, paths.log)
    runc_start(paths.cid)
    session.wait_monitor(60)
    thread.join(10)
    size = paths.log.stat().st_size
    assert seen["log_size"] == size, "the exit file appeared before the log was complete"
    content = 0
    with open(paths.log, "rb") as f:
        for line in f:
            assert line[36:45] == b"stdout P "
            content += len(line) - 46
    assert content == total


def test_log_directory_removed_while_running(bundles: Bundles, launcher: Launcher,
                                             tmp_path: Path) -> None:
    logdir = tmp_path / "logs"
    logdir.mkdir()
    bundle = bundles.make(["sh", "-c", "read x; echo after-removal"])
    session, paths = launcher.create_ok(bundle, "-i", log=f"k8s-file:{logdir}/ctr.log")
    sock = connect(bundle / "attach")
    runc_start(paths.cid)
    subprocess.run(["rm", "-rf", str(logdir)], check=True)
    with open(bundle / "ctl", "w") as ctl:
        ctl.write("2 0 0\n")  # reopen fails (no directory): warned, logging goes on
    sock.send(b"go\n")
    assert bytes(read_until_eof(sock).data["stdout"]) == b"after-removal\n"
    session.wait_monitor()
    assert paths.exit_file.read_text() == "0"


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], check=True)
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=True)


def test_disk_full(bundles: Bundles, launcher: Launcher, tiny_tmpfs: Path) -> None:
    """The log's filesystem fills up: the container is not blocked, the monitor goes on,
    the exit file is still written, attach clients still get everything."""
    total = 4 * MIB
    bundle = bundles.make(["sh", "-c", f"head -c {total} /dev/zero | tr '\\0' 'f'; echo done"])
    session, paths = launcher.create_ok(bundle, log=f"k8s-file:{tiny_tmpfs}/ctr.log")
    sock = connect(bundle / "attach")
    runc_start(paths.cid)
    got = read_until_eof(sock)
    assert len(got.data["stdout"]) == total + 5
    session.wait_monitor()
    assert paths.exit_file.read_text() == "0"
    # records of up to 256 KiB (one read each) on a 256 KiB disk: the one cut by the full
    # disk is rolled back at exit, so what is kept (maybe nothing) is whole records
    data = (tiny_tmpfs / "ctr.log").read_bytes()
    assert len(data) <= 256 * 1024
    if data:
        parse_log(data)


def test_log_path_is_a_symlink_or_fifo(bundles: Bundles, launcher: Launcher,
                                       tmp_path: Path) -> None:
    target = tmp_path / "real.log"
    link = tmp_path / "link.log"
    link.symlink_to(target)
    bundle = bundles.make(["echo", "via-link"])
    session, paths = launcher.create_ok(bundle, log=f"k8s-file:{link}")
    runc_start(paths.cid)
    session.wait_monitor()
    assert [r[2] for r in parse_log(target.read_bytes())] == [b"via-link"]
    # a fifo nobody reads: opening it for writing would block forever; refuse it up front
    fifo = tmp_path / "fifo.log"
    os.mkfifo(fifo)
    res = subprocess.run([*PYMON, "-c", "c",
                          "-u", "c", "-r", RUNC, "-l", f"k8s-file:{fifo}"],
                         capture_output=True, text=True, timeout=20, cwd=str(tmp_path))
    assert res.returncode == 1
    assert res.stderr.startswith("[conmon:e]: Failed to open log file")


@pytest.fixture
def mib_tmpfs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "mib"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], check=True)
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=True)


def test_disk_full_then_space_returns_every_record_well_formed(
        bundles: Bundles, launcher: Launcher, mib_tmpfs: Path, tmp_path: Path) -> None:
    """Write until ENOSPC, free space, keep writing: no record is glued onto a cut one, and
    every line is in the log or counted as dropped in the diagnostic."""
    before, after = 20000, 2000
    filler = mib_tmpfs / "filler"
    filler.write_bytes(b"\0" * (512 << 10))  # removed to give space back
    # one echo = one write(2) of a whole line: no read splits a line, so no P records
    bundle = bundles.make(["sh", "-c", (f"i=0; while [ $i -lt {before} ]; do echo before$i; "
                                        "i=$((i+1)); done; echo waiting; read x; "
                                        f"i=0; while [ $i -lt {after} ]; do echo after$i; "
                                        "i=$((i+1)); done")])
    syslog = PrivateSyslog(tmp_path / "syslog")
    try:
        session, paths = launcher.create_ok(bundle, "-i", "--syslog", wrapper=syslog.wrapper,
                                            log=f"k8s-file:{mib_tmpfs}/ctr.log")
        sock = connect(bundle / "attach")
        runc_start(paths.cid)
        read_until_eof(sock, until=b"waiting\n")  # the attach client gets it all, full or not
        syslog.wait_for(r"write to log file .*ctr\.log failed: No space left on device")
        filler.unlink()
        sock.send(b"go\n")
        got = read_until_eof(sock)
        assert got.data["stdout"].endswith(b"after%d\n" % (after - 1))
        session.wait_monitor()
        assert paths.exit_file.read_text() == "0"
        dropped = syslog.wait_for(r"writes to log file .*ctr\.log succeed again: (\d+) lines "
                                  r"dropped \((\d+) records, (\d+) bytes\)")
    finally:
        syslog.close()
    log = parse_log((mib_tmpfs / "ctr.log").read_bytes())  # every record well formed
    contents = [content for _, flag, content in log]
    assert all(flag == b"F" for _, flag, _ in log)
    expected = ([b"before%d" % i for i in range(before)] + [b"waiting"]
                + [b"after%d" % i for i in range(after)])
    # nothing glued or cut: the lines kept are whole, in order, a subsequence of those written
    it = iter(expected)
    assert all(any(c == e for e in it) for c in contents), "a line was glued, cut or reordered"
    assert contents[-after:] == expected[-after:]  # space was back: nothing lost after "go"
    assert len(contents) + int(dropped[1]) == len(expected)  # every line kept or counted
    assert int(dropped[1]) > 0
