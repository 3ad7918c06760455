"""A log write cut short (disk full): the pure policy (logformat.cut), then the k8s-file
sink against real short writes, made without root by RLIMIT_FSIZE."""

from __future__ import annotations

import resource
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pymon.logformat import STDOUT, cut, records
from pymon.logs import K8sFileLog, open_k8s_file
from tests.integration.test_lifecycle import parse_log

TS = b"2026-11-24T20:45:00.300067495+00:00"


def recs(chunk: bytes) -> bytes:
    return b"".join(records(chunk, STDOUT, TS))


def test_cut_on_a_boundary_leaves_nothing_open() -> None:
    data = recs(b"one\ntwo\nthree\n")
    first = len(recs(b"one\n"))
    c = cut(data, first)
    assert (c.rest, c.head, c.line) == (b"", 0, False)
    assert (c.dropped_records, c.dropped_lines, c.dropped_bytes) == (2, 2, len(data) - first)


def test_cut_inside_a_record_gives_its_rest_and_head() -> None:
    data = recs(b"one\ntwo\nthree\nfour")
    at = len(recs(b"one\n")) + 10  # inside the timestamp of "two"
    c = cut(data, at)
    assert c.head == 10 and c.line
    assert data[:at] + c.rest == recs(b"one\ntwo\n")
    # "three" and the partial "four" are dropped: two records, one of them a line end
    assert (c.dropped_records, c.dropped_lines) == (2, 1)
    assert c.dropped_bytes == len(recs(b"three\nfour"))


def test_nothing_written() -> None:
    data = recs(b"a\nb")
    c = cut(data, 0)
    assert (c.rest, c.head, c.dropped_records, c.dropped_lines) == (b"", 0, 2, 1)


@given(st.lists(st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")), min_size=1,
                max_size=8), st.booleans(), st.data())
def test_cut_anywhere_completes_or_drops_whole_records(lines: list[bytes], partial: bool,
                                                       data: st.DataObject) -> None:
    chunk = b"\n".join(lines) + (b"" if partial else b"\n")
    framed = recs(chunk)
    at = data.draw(st.integers(0, len(framed)))
    c = cut(framed, at)
    kept = framed[:at] + c.rest
    assert kept.endswith(b"\n") or not kept
    assert framed.startswith(kept)
    assert len(kept) + c.dropped_bytes == len(framed)
    if kept:
        parse_log(kept)  # every kept record is whole
    dropped = framed[len(kept):]
    assert c.dropped_records == dropped.count(b"\n")
    assert c.dropped_lines == sum(1 for r in dropped.split(b"\n")[:-1] if r[43:44] == b"F")


@pytest.fixture
def fsize_limit() -> Iterator[None]:
    """Short writes and EFBIG past the limit the test sets (SIGXFSZ ignored, as pymon does)."""
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    yield
    resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
    signal.signal(signal.SIGXFSZ, old_handler)


def lines(prefix: str, n: int) -> bytes:
    return b"".join(b"%s%04d\n" % (prefix.encode(), i) for i in range(n))


def test_sink_completes_the_cut_record_when_space_returns(tmp_path: Path,
                                                          fsize_limit: None) -> None:
    path = tmp_path / "ctr.log"
    sink = K8sFileLog(str(path), open_k8s_file(str(path)))
    limit = 1000
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    sink.write(lines("before", 50), STDOUT, TS)  # cut at byte 1000, inside a record
    assert path.stat().st_size == limit and sink.rest
    sink.write(lines("during", 5), STDOUT, TS)  # still full: dropped, counted
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    sink.write(lines("after", 3), STDOUT, TS)
    sink.finish(sync=False)
    sink.close()
    got = [content for _, _, content in parse_log(path.read_bytes())]
    per_line = len(recs(b"before0000\n"))
    kept = limit // per_line + 1  # the cut record was completed
    assert got == [b"before%04d" % i for i in range(kept)] + [b"after%04d" % i for i in range(3)]
    assert sink.dropped_lines == 50 - kept + 5


def test_sink_rolls_back_a_record_it_cannot_complete(tmp_path: Path, fsize_limit: None) -> None:
    path = tmp_path / "ctr.log"
    sink = K8sFileLog(str(path), open_k8s_file(str(path)))
    resource.setrlimit(resource.RLIMIT_FSIZE, (1000, resource.RLIM_INFINITY))
    sink.write(lines("before", 50), STDOUT, TS)
    sink.finish(sync=False)  # exit while still full: the file ends on a record boundary
    sink.close()
    data = path.read_bytes()
    per_line = len(recs(b"before0000\n"))
    assert len(data) == (1000 // per_line) * per_line
    assert [c for _, _, c in parse_log(data)] == [b"before%04d" % i for i in range(1000 // per_line)]
    assert sink.dropped_lines == 50 - 1000 // per_line
