"""k8s-file framing (contract §5.2) as golden bytes, and the fast path against the slow."""

from __future__ import annotations

import time

from hypothesis import given
from hypothesis import strategies as st

from pymon import logformat
from pymon.logformat import STDERR, STDOUT, frame, records, timestamp

TS = b"2026-11-24T20:45:00.300067495+00:00"


def framed(chunk: bytes, stream: bytes = STDOUT) -> bytes:
    bufs, size = frame(chunk, stream, TS)
    out = b"".join(bufs)
    assert len(out) == size
    return out


def test_full_and_partial_lines() -> None:
    assert framed(b"hi\nno-newline") == (TS + b" stdout F hi\n" + TS + b" stdout P no-newline\n")


def test_only_partial() -> None:
    assert framed(b"abc", STDERR) == TS + b" stderr P abc\n"


def test_empty_lines_and_bytes_kept_verbatim() -> None:
    assert framed(b"\n\na\x00b\xffc\r\n") == (
        TS + b" stdout F \n" + TS + b" stdout F \n" + TS + b" stdout F a\x00b\xffc\r\n")


def test_prefix_is_45_bytes() -> None:
    out = framed(b"\n")
    assert len(out) == 46 and out == TS + b" stdout F \n"


def test_timestamp_format_utc(monkeypatch) -> None:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    logformat.reset_timestamp_cache()
    try:
        assert timestamp(1_700_000_000_000_000_123) == b"2023-11-14T22:13:20.000000123+00:00"
    finally:
        monkeypatch.undo()
        time.tzset()
        logformat.reset_timestamp_cache()


def test_timestamp_local_offset(monkeypatch) -> None:
    monkeypatch.setenv("TZ", "Asia/Kolkata")  # +05:30: minutes in the offset
    time.tzset()
    logformat.reset_timestamp_cache()
    try:
        assert timestamp(1_700_000_000_500_000_000) == b"2023-11-15T03:43:20.500000000+05:30"
        monkeypatch.setenv("TZ", "America/St_Johns")  # -03:30
        time.tzset()
        logformat.reset_timestamp_cache()
        assert timestamp(1_700_000_000_000_000_000).endswith(b"-03:30")
    finally:
        monkeypatch.undo()
        time.tzset()
        logformat.reset_timestamp_cache()


@given(st.binary(min_size=1, max_size=3000), st.sampled_from([STDOUT, STDERR]))
def test_fast_path_equals_record_path(chunk: bytes, stream: bytes) -> None:
    recs = records(chunk, stream, TS)
    assert framed(chunk, stream) == b"".join(recs)
    # every record is one line of the file, and the contents reassemble the chunk
    content = b""
    for rec in recs:
        assert rec.endswith(b"\n") and rec.count(b"\n") == 1
        head, tag, body = rec[:len(TS) + 8], rec[len(TS) + 8:len(TS) + 10], rec[len(TS) + 10:]
        assert head == TS + b" " + stream + b" "
        content += body if tag == b"F " else body[:-1]
    assert content == chunk
