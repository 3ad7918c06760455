"""Relay of the container's stdout/stderr to the log sinks (and, later, attach clients).

Reads go into one preallocated buffer per stream and are as large as the pipe holds
(the pipe is enlarged to 1 MiB in launch.make_pipe): few wake-ups, and the per-line work
happens in logformat's whole-buffer operations.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable

import trio

from pymon.diag import log
from pymon.logs import Sinks

READ_SIZE = 256 * 1024


class Relay:
    """One container output fd -> sinks, until EOF."""

    def __init__(self, fd: int, stream: bytes, sinks: Sinks,
                 fanout: Callable[[bytes, bytes], None] | None = None) -> None:
        self.fd = fd
        self.stream = stream
        self.sinks = sinks
        self.fanout = fanout
        self.eof = trio.Event()
        self._buf = bytearray(READ_SIZE)
        self._view = memoryview(self._buf)
        os.set_blocking(fd, False)

    def read_available(self) -> bool:
        """Relay what can be read now. Returns False when the pipe would block."""
        try:
            n = os.readv(self.fd, [self._buf])
        except BlockingIOError:
            return False
        except OSError as e:
            if e.errno != errno.EIO:  # EIO: a tty whose other side is gone, i.e. EOF
                log.warning("read from container %s failed: %s", self.stream.decode(), e.strerror)
            n = 0
        if n == 0:
            self.eof.set()
            return False
        chunk = bytes(self._view[:n])
        self.sinks.write(chunk, self.stream)
        if self.fanout is not None:
            self.fanout(chunk, self.stream)
        return True

    async def run(self) -> None:
        while not self.eof.is_set():
            if self.read_available():
                await trio.lowlevel.checkpoint()  # let other tasks run under a flood
            elif not self.eof.is_set():
                await trio.lowlevel.wait_readable(self.fd)

    def drain(self) -> None:
        """Everything still in the pipe, without waiting (the final drain at exit)."""
        while not self.eof.is_set() and self.read_available():
            pass

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
