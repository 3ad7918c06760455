"""journald native protocol encoding and conmon's line assembly (§5.5), against a datagram
socket standing in for journald (the real journald is in tests/integration)."""

from __future__ import annotations

import socket
import struct
from pathlib import Path

import pytest

from pymon.journald import JournaldLog, encode_field
from pymon.logformat import STDERR, STDOUT

CID = "0123456789abcdef0123"


def decode(payload: bytes) -> list[tuple[str, bytes]]:
    fields, i = [], 0
    while i < len(payload):
        nl = payload.index(b"\n", i)
        line = payload[i:nl]
        if b"=" in line:
            name, _, value = line.partition(b"=")
            i = nl + 1
        else:
            name = line
            (size,) = struct.unpack("<Q", payload[nl + 1:nl + 9])
            value = payload[nl + 9:nl + 9 + size]
            assert payload[nl + 9 + size:nl + 10 + size] == b"\n"
            i = nl + 10 + size
        fields.append((name.decode(), value))
    return fields


@pytest.fixture
def journal(tmp_path: Path):  # type: ignore[no-untyped-def]
    path = str(tmp_path / "socket")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    server.setblocking(False)

    def entries() -> list[list[tuple[str, bytes]]]:
        out = []
        while True:
            try:
                out.append(decode(server.recv(1 << 20)))
            except BlockingIOError:
                return out
    yield path, entries
    server.close()


def test_field_encoding() -> None:
    assert encode_field(b"A", b"b c") == b"A=b c\n"
    assert encode_field(b"MESSAGE", b"x\n") == b"MESSAGE\n" + struct.pack("<Q", 2) + b"x\n\n"


def test_fields_in_conmon_order(journal) -> None:  # type: ignore[no-untyped-def]
    path, entries = journal
    sink = JournaldLog(CID, "web", "mytag", ("A_B=1", "C=x"), socket_path=path)
    sink.write(b"hello\n", STDOUT, b"")
    sink.write(b"oops\n", STDERR, b"")
    [out, err] = entries()
    assert out == [("MESSAGE", b"hello\n"), ("CONTAINER_ID_FULL", CID.encode()),
                   ("PRIORITY", b"6"), ("CONTAINER_ID", CID[:12].encode()),
                   ("CONTAINER_TAG", b"mytag"), ("CONTAINER_NAME", b"web"),
                   ("SYSLOG_IDENTIFIER", b"mytag"), ("A_B", b"1"), ("C", b"x")]
    assert ("PRIORITY", b"3") in err


def test_identifier_falls_back_to_name_then_short_id(journal) -> None:  # type: ignore[no-untyped-def]
    path, entries = journal
    JournaldLog(CID, "web", None, (), socket_path=path).write(b"a\n", STDOUT, b"")
    JournaldLog(CID, None, None, (), socket_path=path).write(b"b\n", STDOUT, b"")
    [named, bare] = entries()
    assert ("SYSLOG_IDENTIFIER", b"web") in named
    assert ("SYSLOG_IDENTIFIER", CID[:12].encode()) in bare
    assert not any(k == "CONTAINER_NAME" for k, _ in bare)


def test_partial_lines_are_joined(journal) -> None:  # type: ignore[no-untyped-def]
    path, entries = journal
    sink = JournaldLog(CID, None, None, (), socket_path=path)
    sink.write(b"par", STDOUT, b"")
    sink.write(b"tial\nnext", STDOUT, b"")
    sink.write(b"err-part", STDERR, b"")
    sink.finish(sync=False)
    msgs = [(dict(e)["MESSAGE"], dict(e).get("CONTAINER_PARTIAL_MESSAGE"), dict(e)["PRIORITY"])
            for e in entries()]
    assert msgs == [(b"partial\n", None, b"6"), (b"next", b"true", b"6"),
                    (b"err-part", b"true", b"3")]


def test_long_line_is_sent_in_partial_pieces(journal) -> None:  # type: ignore[no-untyped-def]
    path, entries = journal
    sink = JournaldLog(CID, None, None, (), partial_flag=True, socket_path=path)
    sink.write(b"x" * 20000 + b"\n", STDOUT, b"")
    got = [dict(e) for e in entries()]
    assert b"".join(e["MESSAGE"] for e in got) == b"x" * 20000 + b"\n"
    assert [e.get("CONTAINER_PARTIAL_MESSAGE") for e in got] == [b"true", b"true", None]
    assert all(len(e["MESSAGE"]) <= 8192 for e in got)


def test_no_partial_flag_option(journal) -> None:  # type: ignore[no-untyped-def]
    path, entries = journal
    sink = JournaldLog(CID, None, None, (), partial_flag=False, socket_path=path)
    sink.write(b"end-without-newline", STDOUT, b"")
    sink.finish(sync=False)
    [e] = entries()
    assert dict(e)["MESSAGE"] == b"end-without-newline"
    assert "CONTAINER_PARTIAL_MESSAGE" not in dict(e)


def test_missing_journal_does_not_raise(tmp_path: Path) -> None:
    sink = JournaldLog(CID, None, None, (), socket_path=str(tmp_path / "none"))
    sink.write(b"lost\n", STDOUT, b"")  # warned once, dropped; the monitor goes on
    sink.close()
