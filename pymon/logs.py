"""Log sinks: where container output goes besides attach clients.

Every sink has the same small interface (write, reopen, finish, close). Writes to the k8s
file are blocking writes to a regular file: they are not pollable, and a bounded write to a
local file is cheaper than a thread hop per chunk (design note: measured, deliberate).
"""

from __future__ import annotations

import errno
import os
from pymon import logformat
from pymon.diag import log


class LogSink:
    """The interface of a log driver. A plain base class rather than typing.Protocol:
    typing costs ~8 ms to import and this module is loaded on the start-up path."""

    def write(self, chunk: bytes, stream: bytes, ts: bytes) -> None:
        raise NotImplementedError

    def reopen(self) -> None:
        """Start a new file at the configured path (ctl message 2, or the size cap)."""

    def finish(self, sync: bool) -> None:
        """Flush what is buffered; fsync if `sync`."""

    def close(self) -> None:
        """Release the sink's fds."""


K8S_MODE = 0o640


def open_k8s_file(path: str) -> int:
    """O_WRONLY|O_APPEND|O_CREAT|O_CLOEXEC, 0640 — done by P0 so a bad path fails early."""
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, K8S_MODE)


class K8sFileLog(LogSink):
    """k8s-file driver: framing from logformat, conmon's size cap (truncate by reopen)."""

    def __init__(self, path: str, fd: int, size_max: int = -1, global_max: int = -1) -> None:
        self.path = path
        self.fd = fd
        self.size_max = size_max
        self.global_max = global_max
        try:
            self.written = os.fstat(fd).st_size  # existing content counts toward the cap
        except OSError:
            self.written = 0
        self.total = self.written  # lifetime total for --log-global-size-max, never reset
        self._failed = False

    def write(self, chunk: bytes, stream: bytes, ts: bytes) -> None:
        if self.global_max > 0 and self.total >= self.global_max:
            return
        bufs, size = logformat.frame(chunk, stream, ts)
        capped = self.size_max > 0 and self.written + size > self.size_max
        if not capped and (self.global_max <= 0 or self.total + size <= self.global_max):
            self._writev(bufs, size)
            return
        # A cap falls inside this chunk: account record by record, as conmon does.
        for rec in logformat.records(chunk, stream, ts):
            if self.global_max > 0 and self.total >= self.global_max:
                return
            if self.size_max > 0 and self.written + len(rec) > self.size_max:
                self.reopen()
            self._writev([rec], len(rec))

    def _writev(self, bufs: list[bytes], size: int) -> None:
        self.written += size
        self.total += size
        try:
            done = os.writev(self.fd, bufs)
            while done < size:  # short write (disk nearly full, signal): write the rest
                rest = b"".join(bufs)[done:]
                done += os.write(self.fd, rest)
        except OSError as e:
            # The monitor must go on (the container must not block on us); report once.
            if not self._failed:
                log.warning("write to log file %s failed: %s", self.path, e.strerror)
                self._failed = True
            return
        self._failed = False

    def reopen(self) -> None:
        """Replace the file at `path` with a new empty one (tmp + rename: atomic, and an
        inotify watcher sees a create). The old inode keeps what it had."""
        tmp = self.path + ".tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_TRUNC | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
                         K8S_MODE)
        except OSError as e:
            log.warning("failed to open log file %s: %s", tmp, e.strerror)
            return
        try:
            os.rename(tmp, self.path)
        except OSError as e:
            log.warning("failed to rename log file %s: %s", tmp, e.strerror)
            os.close(fd)
            return
        os.close(self.fd)
        self.fd = fd
        self.written = 0

    def finish(self, sync: bool) -> None:
        if sync:
            try:
                os.fsync(self.fd)
            except OSError as e:
                if e.errno != errno.EINVAL:
                    log.warning("fsync of log file %s failed: %s", self.path, e.strerror)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class Sinks:
    """All configured sinks, written in conmon's order (k8s-file first, then journald)."""

    def __init__(self, sinks: list[LogSink]) -> None:
        self.sinks = sinks

    def write(self, chunk: bytes, stream: bytes) -> None:
        if self.sinks:
            ts = logformat.timestamp()
            for sink in self.sinks:
                sink.write(chunk, stream, ts)

    def reopen(self) -> None:
        for sink in self.sinks:
            sink.reopen()

    def finish(self, sync: bool) -> None:
        for sink in self.sinks:
            sink.finish(sync)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()
