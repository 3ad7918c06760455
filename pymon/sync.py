"""Sync and attach pipe messages (contract §4): pure encoding plus one send helper.

The bytes are conmon's exactly: `{"KEY": N}\n` or `{"KEY": N, "message": "..."}\n`, one
space after ':' and ','. Escaping follows conmon 2.2 byte for byte, except that invalid
UTF-8 becomes U+FFFD so the JSON is always valid (Go's decoder would do the same).
"""

from __future__ import annotations

import errno
import os

# podman reads each packet into a 4096-byte bufio buffer; a longer packet is cut and then
# fails to parse, so every packet we send fits (conmon can exceed this; we do not).
MAX_PACKET = 4096

_ESCAPES = {ord("\\"): "\\\\", ord('"'): '\\"', ord("/"): "\\/", 0x0A: "\\n", 0x0D: "\\r",
            0x09: "\\t", 0x08: "\\b", 0x0C: "\\f"}
for _c in list(range(0x20)) + [0x7F]:
    _ESCAPES.setdefault(_c, f"\\u{_c:04x}")


def escape_json(text: str) -> str:
    return text.translate(_ESCAPES)


def message_key(api_version: int, is_exec: bool) -> str:
    if api_version >= 1:
        return "data"
    return "exit_code" if is_exec else "pid"


def encode(key: str, value: int, message: bytes | str | None = None) -> bytes:
    """One sync packet, at most MAX_PACKET bytes: the message is shortened to fit."""
    head = f'{{"{key}": {value}'
    if not message:
        return (head + "}\n").encode()
    if isinstance(message, bytes):
        message = message.decode("utf-8", errors="replace")
    budget = MAX_PACKET - len(head.encode()) - len(', "message": ""}\n')
    escaped = escape_json(message)
    data = escaped.encode()
    if len(data) > budget:
        # cut on a character boundary, and never inside an escape sequence
        out: list[str] = []
        used = 0
        for ch in message:
            piece = escape_json(ch)
            size = len(piece.encode())
            if used + size > budget:
                break
            out.append(piece)
            used += size
        escaped = "".join(out)
    return f'{head}, "message": "{escaped}"}}\n'.encode()


def send(fd: int | None, packet: bytes) -> int | None:
    """Write one packet. EPIPE (the engine closed its end, as podman does after the first
    exec message) closes our end and is otherwise ignored. Returns the fd, or None once
    it has been closed."""
    if fd is None:
        return None
    try:
        os.write(fd, packet)
    except OSError as e:
        if e.errno not in (errno.EPIPE, errno.ECONNRESET):
            raise
        os.close(fd)
        return None
    return fd


class EarlyReport:
    """Where a failure before the monitor exists is reported (bad argv values, a log file
    that cannot be opened, a missing exec spec): conmon writes those only to its stderr,
    which CRI-O's ExecSync and create paths do not show, so the engine's sync pipe gets
    the message too. Used by monitor/prepare.py, in the cold P0 and in a warm monitor
    alike; from the fork on, M reports its own failures (monitor/setup.py)."""

    __slots__ = ("fd", "key")

    def __init__(self, env: dict[str, str], key: str) -> None:
        """Finds the engine's sync pipe leniently: a bad value is reported by the strict
        check (prepare.env_fd), and then nothing can be sent."""
        self.key = key
        self.fd: int | None = None
        value = env.get("_OCI_SYNCPIPE", "")
        if value.isdigit():
            try:
                os.fstat(int(value))
            except OSError:
                return
            self.fd = int(value)

    def send(self, message: str) -> None:
        if self.fd is not None:
            try:
                send(self.fd, encode(self.key, -1, message))
            except OSError:
                pass
            self.fd = None
