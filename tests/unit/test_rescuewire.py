"""The rescue channel's messages and the torn-record check (pure; no root)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pymon.logformat import torn_tail
from pymon.logs import cut_torn_record
from pymon.server import rescuewire as rw


def test_register_roundtrip() -> None:
    msg = rw.decode(rw.encode_register(4242, "oe"), 2)
    assert msg == rw.Registered(4242, "oe")
    assert rw.decode(rw.encode_register(7, "t"), 1) == rw.Registered(7, "t")
    assert rw.decode(rw.encode_register(7, "ta"), 2) == rw.Registered(7, "ta")
    assert rw.decode(rw.encode_register(7, "oea"), 3) == rw.Registered(7, "oea")
    assert rw.decode(rw.encode_register(7, ""), 0) == rw.Registered(7, "")  # passthrough


@given(st.integers(min_value=-(1 << 31), max_value=(1 << 31) - 1))
def test_exited_roundtrip(code: int) -> None:
    assert rw.decode(rw.encode_exited(code), 0) == rw.Exited(code)


def test_done() -> None:
    assert rw.decode(rw.encode_done(), 0) == rw.Done()


@pytest.mark.parametrize("data,fds,why", [
    (b"", 0, "empty"),
    (b"R\0\0", 0, "short"),
    (rw.encode_register(0, ""), 0, "pid 0"),
    (rw.encode_register(5, "oe"), 3, "do not match"),
    (rw.encode_register(5, "oo"), 2, "do not match"),
    (rw.encode_register(5, "ox"), 2, "do not match"),
    (rw.encode_register(5, "to"), 2, "without output pipes"),
    (b"R\0\0\0\x05\xff", 1, "ASCII"),
    (rw.encode_exited(3), 1, "carries none"),
    (rw.encode_exited(3)[:-1], 0, "unknown"),
    (rw.encode_done() + b"x", 0, "unknown"),
    (b"Z", 0, "unknown"),
])
def test_bad_messages_are_refused(data: bytes, fds: int, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        rw.decode(data, fds)


@given(st.binary(max_size=64), st.integers(min_value=0, max_value=4))
def test_decode_never_raises_anything_but_value_error(data: bytes, fds: int) -> None:
    try:
        rw.decode(data, fds)
    except ValueError:
        pass


def test_torn_tail() -> None:
    assert torn_tail(b"a\nb\n", at_start=True) == 0
    assert torn_tail(b"a\nb\n2024-01-01T00:0", at_start=False) == 15
    assert torn_tail(b"partial", at_start=True) == 7
    assert torn_tail(b"partial", at_start=False) is None  # look further back
    assert torn_tail(b"", at_start=True) == 0


def test_cut_torn_record(tmp_path: Path) -> None:
    log = tmp_path / "ctr.log"
    good = b"2024-01-01T00:00:00.000000000+00:00 stdout F one\n"
    log.write_bytes(good + b"2024-01-01T00:00:00.0000")
    assert cut_torn_record(str(log)) == 24
    assert log.read_bytes() == good
    assert cut_torn_record(str(log)) == 0
    # a torn record longer than one block of the backwards scan
    log.write_bytes(good + b"x" * 100)
    assert cut_torn_record(str(log), block=16) == 100
    assert log.read_bytes() == good
    log.write_bytes(b"y" * 50)  # nothing whole at all
    assert cut_torn_record(str(log), block=16) == 50
    assert log.read_bytes() == b""
    assert cut_torn_record(str(tmp_path / "missing")) == 0
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert cut_torn_record(str(fifo)) == 0  # not a file: left alone
