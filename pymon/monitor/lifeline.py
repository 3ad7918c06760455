"""A warm monitor's line to its server (pymon/server/rescuewire.py has the messages): if the
monitor is killed, the server finishes its work with what it was told here. Cold monitors
have none (their parent is gone: nobody could rescue them).

Every send is non-blocking and its failure ignored: the server reads promptly, and a server
that is gone cannot rescue anyone anyway; the monitor's own work must never wait on it.
"""

from __future__ import annotations

import socket

from pymon.diag import log
from pymon.server import rescuewire


class Lifeline:
    def __init__(self, fd: int) -> None:
        self.fd = fd  # CLOEXEC: no runtime, container or exit command inherits it
        self.sock: socket.socket | None = socket.socket(fileno=fd)

    def _send(self, data: bytes, fds: list[int] | None = None) -> None:
        if self.sock is None:
            return
        flags = socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL  # a server gone is EPIPE, no signal
        try:
            if fds:
                socket.send_fds(self.sock, [data], fds, flags)
            else:
                self.sock.send(data, flags)
        except OSError as e:
            log.debug("rescue channel: %s", e)

    def register(self, container_pid: int, fds: list[tuple[str, int | None]]) -> None:
        """Once the engine has the pid: the container and dups of its stdio (the server
        holds them; the pipes themselves are unaffected)."""
        present = [(role, fd) for role, fd in fds if fd is not None]
        self._send(rescuewire.encode_register(container_pid, "".join(r for r, _ in present)),
                   [fd for _, fd in present])

    def exited(self, code: int) -> None:
        self._send(rescuewire.encode_exited(code))

    def done(self) -> None:
        """The exit is recorded and the exit command started: release the server's dups."""
        self._send(rescuewire.encode_done())
        self.close()

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def keep(self) -> frozenset[int]:
        """The fd to keep open while others are closed before the exit command."""
        return frozenset((self.fd,)) if self.sock is not None else frozenset()

