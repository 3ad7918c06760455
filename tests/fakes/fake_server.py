"""A scripted stand-in for `pymon-server`, to test launchers against the wire protocol.

The test drives it step by step, no thread (accept a request, look at the launcher
while it waits, answer), so each test reads as the conversation it checks. Requests are
decoded with the server's own decoder (pymon/server/wire.py).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from pymon import handover
from pymon.server.wire import Request, decode_request

TIMEOUT = 10.0  # seconds any single step may take before the test fails


@dataclass
class Received:
    """One launcher's connection, as the test drives it (closing what it holds)."""

    conn: socket.socket
    raw: bytes
    request: Request
    fds: list[int]  # ours now, in request.fds order; closed by `close` or `drop_fds`
    token: int  # the read end of the launcher's token pipe (handover.py)

    def reply(self, kind: str, value: int = 0, text: str = "") -> None:
        self.conn.send(handover.encode_reply(kind, value, text))

    def take_token(self) -> None:
        """Commit the launcher, as the server does before it forks the monitor."""
        assert self._read_token() == handover.TOKEN, "the launcher took its token already"

    def token_left(self) -> bool:
        """Whether the token was still in the pipe (the launcher had not taken it); takes
        it if so."""
        return self._read_token() == handover.TOKEN

    def _read_token(self) -> bytes:
        os.set_blocking(self.token, False)
        try:
            return os.read(self.token, 1)
        except BlockingIOError:
            return b""

    def drop_fds(self) -> None:
        """Close the launcher's fds (they include its stdout and stderr pipes: a test
        reading those to EOF must drop them first)."""
        while self.fds:
            os.close(self.fds.pop())

    def close(self) -> None:
        self.drop_fds()
        if self.token >= 0:
            os.close(self.token)
            self.token = -1
        self.conn.close()


class FakeServer:
    def __init__(self, path: str) -> None:
        self.path = path
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.listener.bind(path)
        self.listener.listen(8)
        self.listener.settimeout(TIMEOUT)

    def accept(self) -> Received:
        conn, _ = self.listener.accept()
        conn.settimeout(TIMEOUT)
        raw, fds, flags, _ = socket.recv_fds(conn, handover.MAX_REQUEST + 1,
                                             handover.MAX_FDS + 3)
        assert not flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC), flags
        token = fds.pop()  # the last fd is the launcher's token
        return Received(conn, raw, decode_request(raw, len(fds)), fds, token)

    def pending(self) -> bool:
        """Whether a connection waits to be accepted (without waiting for one)."""
        self.listener.setblocking(False)
        try:
            conn, _ = self.listener.accept()
        except BlockingIOError:
            return False
        finally:
            self.listener.settimeout(TIMEOUT)
        conn.close()
        return True

    def close(self) -> None:
        self.listener.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
