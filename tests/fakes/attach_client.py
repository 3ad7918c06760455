"""An attach client like podman's: SOCK_SEQPACKET through /proc/self/fd/N (long paths)."""

from __future__ import annotations

import os
import select
import socket
import time
from pathlib import Path

STREAMS = {2: "stdout", 3: "stderr"}


def connect(path: Path | str) -> socket.socket:
    fd = os.open(str(path), os.O_PATH | os.O_CLOEXEC)
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        sock.connect(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)
    return sock


class Received:
    def __init__(self) -> None:
        self.data = {"stdout": bytearray(), "stderr": bytearray()}
        self.max_packet = 0
        self.eof = False

    def add(self, packet: bytes) -> None:
        assert packet, "empty packet"
        self.max_packet = max(self.max_packet, len(packet))
        self.data[STREAMS[packet[0]]] += packet[1:]


def read_until_eof(sock: socket.socket, timeout: float = 30,
                   until: bytes | None = None) -> Received:
    """Read packets until EOF (or until stdout contains `until`)."""
    got = Received()
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([sock], [], [], left)[0]:
            raise TimeoutError(f"attach: no EOF within {timeout}s; got {dict(got.data)!r:.200}")
        try:
            packet = sock.recv(8193 + 1)  # +1: a too-large packet would show as 8194
        except ConnectionResetError:
            packet = b""
        if not packet:
            got.eof = True
            return got
        got.add(packet)
        if until is not None and until in got.data["stdout"]:
            return got
