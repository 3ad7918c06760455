"""k8s-file size caps (§5.3), property-tested against a plain model of the rules:
truncation, rotation to .1 ... .N, the lifetime global cap, and existing content counting."""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pymon.logformat import STDERR, STDOUT, records
from pymon.logs import K8sFileLog, open_k8s_file
from pymon.rotation import backup_renames, unsafe_path_reason

TS = b"2026-11-24T20:45:00.300067495+00:00"

chunks_st = st.lists(st.tuples(st.sampled_from([STDOUT, STDERR]),
                               st.binary(min_size=1, max_size=300).map(
                                   lambda b: bytes(c if c % 5 else 10 for c in b))),
                     max_size=25)


def model(initial: bytes, chunks: list[tuple[bytes, bytes]], size_max: int, global_max: int,
          rotate: bool, max_files: int) -> tuple[bytes, list[bytes]]:
    current, backups = initial, []
    written = total = len(initial)
    for stream, chunk in chunks:
        for rec in records(chunk, stream, TS):
            if global_max > 0 and total >= global_max:
                return current, backups
            if size_max > 0 and written + len(rec) > size_max:
                if rotate:
                    backups = ([current] + backups)[:max_files]
                current, written = b"", 0
            current += rec
            written += len(rec)
            total += len(rec)
    return current, backups


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chunks=chunks_st, size_max=st.sampled_from([-1, 0, 50, 100, 200, 500, 1000]),
       global_max=st.sampled_from([-1, 0, 100, 700, 3000]), rotate=st.booleans(),
       max_files=st.integers(1, 3), initial=st.binary(max_size=120))
def test_caps_match_the_model(tmp_path: Path, chunks: list[tuple[bytes, bytes]], size_max: int,
                              global_max: int, rotate: bool, max_files: int,
                              initial: bytes) -> None:
    d = tmp_path / os.urandom(6).hex()
    d.mkdir()
    path = d / "ctr.log"
    path.write_bytes(initial)
    sink = K8sFileLog(str(path), open_k8s_file(str(path)), size_max, global_max, rotate, max_files)
    for stream, chunk in chunks:
        sink.write(chunk, stream, TS)
    sink.close()
    current, backups = model(initial, chunks, size_max, global_max, rotate, max_files)
    assert path.read_bytes() == current
    for i, backup in enumerate(backups, 1):
        assert Path(f"{path}.{i}").read_bytes() == backup
    assert not Path(f"{path}.{len(backups) + 1}").exists()
    assert sorted(p.name for p in d.iterdir()) == sorted(
        ["ctr.log"] + [f"ctr.log.{i}" for i in range(1, len(backups) + 1)])


def test_truncate_example_from_conmon(tmp_path: Path) -> None:
    """cap 200, eight 51-byte records: only the last two remain (conmon, observed)."""
    path = tmp_path / "log"
    sink = K8sFileLog(str(path), open_k8s_file(str(path)), size_max=200)
    for i in range(8):
        sink.write(b"line%d\n" % i, STDOUT, TS)
    sink.close()
    assert path.read_bytes() == TS + b" stdout F line6\n" + TS + b" stdout F line7\n"


def test_global_cap_can_be_exceeded_by_one_record(tmp_path: Path) -> None:
    path = tmp_path / "log"
    sink = K8sFileLog(str(path), open_k8s_file(str(path)), global_max=120)
    for i in range(5):
        sink.write(b"line%d\n" % i, STDOUT, TS)
    sink.close()
    assert path.read_bytes().count(b"\n") == 3  # 51 + 51 + 51 > 120, then nothing


def test_backup_renames() -> None:
    assert backup_renames("/l", 1) == []
    assert backup_renames("/l", 3) == [("/l.2", "/l.3"), ("/l.1", "/l.2")]


def test_unsafe_paths(tmp_path: Path) -> None:
    assert unsafe_path_reason("/a/../b") is not None
    assert unsafe_path_reason("/a/b..c") is None
    target = tmp_path / "real"
    target.write_text("")
    link = tmp_path / "link"
    link.symlink_to(target)
    sink = K8sFileLog(str(link), open_k8s_file(str(link)), size_max=60, rotate=True)
    sink.write(b"a" * 20 + b"\n", STDOUT, TS)
    sink.write(b"b" * 20 + b"\n", STDOUT, TS)  # would rotate: refused for a symlink
    sink.close()
    assert link.is_symlink() and not Path(f"{link}.1").exists()
    assert target.read_bytes().count(b"\n") == 2


def test_rotation_after_the_file_was_moved_away(tmp_path: Path) -> None:
    path = tmp_path / "log"
    sink = K8sFileLog(str(path), open_k8s_file(str(path)), rotate=True)
    sink.write(b"old\n", STDOUT, TS)
    path.rename(tmp_path / "moved")
    sink.reopen()  # ctl message 2 after a logrotate-style rename
    sink.write(b"new\n", STDOUT, TS)
    sink.close()
    assert path.read_bytes() == TS + b" stdout F new\n"
    assert (tmp_path / "moved").read_bytes() == TS + b" stdout F old\n"
    assert not Path(f"{path}.1").exists()
