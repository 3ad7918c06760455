"""Sync pipe messages (contract §4.2): exact bytes, escaping, the 4096-byte packet cap."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from pymon.sync import MAX_PACKET, encode, message_key


def test_exact_bytes() -> None:
    assert encode("data", 1234) == b'{"data": 1234}\n'
    assert encode("data", -1) == b'{"data": -1}\n'
    assert encode("pid", 5) == b'{"pid": 5}\n'
    assert encode("data", -1, b"") == b'{"data": -1}\n'
    assert encode("data", -1, b"boom\n") == b'{"data": -1, "message": "boom\\n"}\n'


def test_keys() -> None:
    assert message_key(1, False) == "data" and message_key(1, True) == "data"
    assert message_key(0, False) == "pid" and message_key(0, True) == "exit_code"


def test_conmon_escaping() -> None:
    raw = b'a\\b"c/d\re\tf\x08g\x0ch\x01i\x7fj\x1f'
    assert encode("data", -1, raw) == (
        b'{"data": -1, "message": "a\\\\b\\"c\\/d\\re\\tf\\bg\\fh\\u0001i\\u007fj\\u001f"}\n')


def test_runc_message_round_trips() -> None:
    text = ('time="2026-01-01T00:00:00Z" level=error msg="runc create failed: unable to start '
            'container process: exec: \\"/nonexistent\\": stat /nonexistent: no such file or directory"\n')
    packet = encode("data", -1, text.encode())
    assert json.loads(packet) == {"data": -1, "message": text}


@given(st.binary(max_size=20000))
def test_always_valid_json_within_one_packet(raw: bytes) -> None:
    packet = encode("data", -1, raw)
    assert len(packet) <= MAX_PACKET
    assert packet.endswith(b"}\n")
    decoded = json.loads(packet.decode("utf-8"))
    assert decoded["data"] == -1
    expected = raw.decode("utf-8", errors="replace")
    assert expected.startswith(decoded.get("message", ""))
    if len(raw) < 1000:
        assert decoded.get("message", "") == expected
