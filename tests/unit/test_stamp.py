"""The server's code stamp: a change to a file it imported is seen at the next check,
whether the file is written in place or replaced, and whether inotify is there or not."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pymon.server import stamp as stamp_module
from pymon.server.stamp import CodeStamp

pytestmark = pytest.mark.timeout(10)


@pytest.fixture(params=["inotify", "stats only"])
def stamp_of(request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    stamps: list[CodeStamp] = []

    def make(files: list[Path]) -> CodeStamp:
        s = CodeStamp([str(f) for f in files])
        if request.param == "stats only":
            s.close()  # what a server without inotify does: compare every time
        else:
            assert s.watch is not None
        stamps.append(s)
        return s

    yield make
    for s in stamps:
        s.close()


def test_nothing_changed(tmp_path: Path, stamp_of,  # type: ignore[no-untyped-def]
                         monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "mod.py"
    f.write_text("x = 1\n")
    (tmp_path / "other.txt").write_text("unrelated")  # before the stamp
    stamp = stamp_of([f])
    assert stamp.changed() is None
    if stamp.watch is not None:
        # the point of the watch: a quiet directory costs no stat
        def no_stat(path: str) -> None:
            raise AssertionError(f"stat of {path}")

        monkeypatch.setattr(stamp_module, "_state", no_stat)
    assert stamp.changed() is None


def test_written_in_place(tmp_path: Path, stamp_of) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "mod.py"
    f.write_text("x = 1\n")
    stamp = stamp_of([f])
    assert stamp.changed() is None
    with open(f, "a") as out:
        out.write("y = 2\n")
    assert stamp.changed() == str(f)


def module_in_package(tmp_path: Path) -> tuple[Path, Path]:
    """(pkg, pkg/mod.py): a module in a directory of its own, which a test may remove."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    f = pkg / "mod.py"
    f.write_text("x = 1\n")
    return pkg, f


def test_replaced_by_rename(tmp_path: Path, stamp_of) -> None:  # type: ignore[no-untyped-def]
    pkg, f = module_in_package(tmp_path)
    stamp = stamp_of([f])
    new = pkg / "mod.py.new"
    new.write_text("x = 1\n")  # the same bytes, another file: what an upgrade does
    assert stamp.changed() is None  # a new file beside it changes nothing yet
    os.rename(new, f)
    assert stamp.changed() == str(f)


def test_directory_removed(tmp_path: Path, stamp_of) -> None:  # type: ignore[no-untyped-def]
    pkg, f = module_in_package(tmp_path)
    stamp = stamp_of([f])
    f.unlink()
    pkg.rmdir()
    assert stamp.changed() == str(f)
