"""Log sinks: where container output goes besides attach clients.

Every sink has the same small interface (write, reopen, finish, close). Writes to the k8s
file are blocking writes to a regular file: they are not pollable, and a bounded write to a
local file is cheaper than a thread hop per chunk (design note: measured, deliberate).
"""

from __future__ import annotations

import errno
import os
from pymon import logformat, rotation
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


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def open_k8s_file(path: str) -> int:
    """O_WRONLY|O_APPEND|O_CREAT|O_CLOEXEC, 0640 — done by P0 so a bad path fails early.

    Opened O_NONBLOCK so that a fifo nobody reads fails at once (ENXIO) instead of hanging
    the engine's `create` (conmon hangs); writes are blocking again afterwards."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NONBLOCK,
                 K8S_MODE)
    os.set_blocking(fd, True)
    return fd


class K8sFileLog(LogSink):
    """k8s-file driver: framing from logformat; at --log-size-max conmon's truncation (the
    file is replaced by an empty one) or, with --log-rotate, rotation to .1 ... .N."""

    def __init__(self, path: str, fd: int, size_max: int = -1, global_max: int = -1,
                 rotate: bool = False, max_files: int = 1,
                 allowlist: tuple[str, ...] = ()) -> None:
        self.path = path
        self.fd = fd
        self.size_max = size_max
        self.global_max = global_max
        self.rotate = rotate
        self.max_files = max_files
        self.allowlist = allowlist
        try:
            self.written = os.fstat(fd).st_size  # existing content counts toward the cap
        except OSError:
            self.written = 0
        self.total = self.written  # lifetime total for --log-global-size-max, never reset
        self._failed = False
        # A write that failed part-way (disk full) cut a record: `rest` completes it before
        # anything else is written, `cut_head` is how much of it is in the file (to roll
        # back to the record boundary if it can never be completed).
        self.rest = b""
        self.cut_head = 0
        self.cut_line = False  # the cut record is an F record
        self.dropped_lines = 0  # lifetime, for the SIGUSR1 state report
        self.dropped_bytes = 0
        self._lost = [0, 0, 0]  # lines, records, bytes since writes started failing

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
        """Write whole records. While the file refuses writes (disk full, say) the monitor
        goes on and the records are dropped, counted, and reported once writes succeed
        again; the file never holds a record cut in two (see logformat.cut)."""
        if self.rest and not self._complete_cut():
            data = b"".join(bufs)
            self._drop(logformat.cut(data, 0))
            return
        done, error = self._write_all(bufs, size)
        if error is None:
            self._resumed()
            return
        cut = logformat.cut(b"".join(bufs), done)
        self.rest, self.cut_head, self.cut_line = cut.rest, cut.head, cut.line
        self._failing(error)
        self._drop(cut)

    def _write_all(self, bufs: list[bytes], size: int) -> tuple[int, OSError | None]:
        """(bytes written, the error that stopped the write or None)."""
        done = 0
        try:
            done = os.writev(self.fd, bufs)
            while done < size:  # short write (disk nearly full, signal): write the rest
                done += os.write(self.fd, b"".join(bufs)[done:])
        except OSError as e:
            return self._count(done), e
        return self._count(done), None

    def _count(self, done: int) -> int:
        self.written += done
        self.total += done
        return done

    def _complete_cut(self) -> bool:
        """Write the rest of the record a failed write cut. True once it is complete."""
        done, error = self._write_all([self.rest], len(self.rest))
        self.rest = self.rest[done:]
        self.cut_head += done
        if error is not None:
            self._failing(error)
        return not self.rest

    def _abandon_cut(self) -> None:
        """Before leaving this file (reopen, exit): complete the cut record if the file
        takes it now, else roll the file back to the record boundary before it."""
        if not self.rest or self._complete_cut():
            return
        try:
            size = os.fstat(self.fd).st_size
            os.ftruncate(self.fd, max(0, size - self.cut_head))
        except OSError as e:  # a fifo or a device: nothing can be taken back
            log.warning("log file %s ends in a cut record: %s", self.path, e.strerror)
        else:
            lost = self.cut_head + len(self.rest)
            self.written = max(0, self.written - self.cut_head)
            self._drop(logformat.Cut(b"", 0, False, 1, int(self.cut_line), lost))
        self.rest = b""
        self.cut_head = 0

    def _failing(self, error: OSError) -> None:
        # The monitor must go on (the container must not block on us); report once.
        if not self._failed:
            log.warning("write to log file %s failed: %s; output is dropped until writes "
                        "succeed again", self.path, error.strerror)
            self._failed = True

    def _drop(self, cut: logformat.Cut) -> None:
        self.dropped_lines += cut.dropped_lines
        self.dropped_bytes += cut.dropped_bytes
        self._lost[0] += cut.dropped_lines
        self._lost[1] += cut.dropped_records
        self._lost[2] += cut.dropped_bytes

    def _resumed(self) -> None:
        if self._failed:
            self._report_lost("writes to log file %s succeed again")
            self._failed = False

    def _report_lost(self, what: str) -> None:
        lines, records, size = self._lost
        log.warning(what + ": %d lines dropped (%d records, %d bytes)", self.path, lines,
                    records, size)
        self._lost = [0, 0, 0]

    def reopen(self) -> None:
        """Continue in a new file at the path: at the size cap, and on ctl message 2 (after
        a log rotator renamed the file away). With --log-rotate the old file is kept as a
        backup; otherwise it is replaced, as conmon does."""
        if self.rotate:
            self.rotate_now()
        else:
            self.truncate()

    def truncate(self) -> None:
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
        self._adopt(fd)

    def rotate_now(self) -> None:
        """Move the full file to `.1` (older backups up, the oldest dropped) and continue in
        a new file at the path. Refused (logging goes on in the current file) when the path
        is unsafe or another process holds a write lock on the file."""
        import fcntl

        reason = rotation.unsafe_path_reason(self.path) or self._unsafe_on_disk()
        if reason is not None:
            log.warning("log rotation refused for %s: %s", self.path, reason)
            self.written = 0  # do not retry for every record
            return
        try:
            fcntl.lockf(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            log.warning("log rotation skipped: %s is locked", self.path)
            return
        new = self.path + ".new"
        try:
            fd = os.open(new, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC,
                         K8S_MODE)
        except OSError as e:
            log.warning("log rotation failed: %s: %s", new, e.strerror)
            return
        try:
            if os.path.lexists(self.path):  # else someone moved it away already
                for src, dst in rotation.backup_renames(self.path, self.max_files):
                    try:
                        os.rename(src, dst)
                    except FileNotFoundError:
                        pass
                os.rename(self.path, self.path + ".1")
            os.rename(new, self.path)
        except OSError as e:
            log.warning("log rotation failed: %s", e.strerror)
            os.close(fd)
            _unlink(new)
            return
        self._adopt(fd)  # closing the old fd also releases the lock

    def _adopt(self, fd: int) -> None:
        """Continue in `fd`, a new empty file now at the path."""
        self._abandon_cut()
        os.close(self.fd)
        self.fd = fd
        self.written = 0

    def _unsafe_on_disk(self) -> str | None:
        import stat

        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            st = None
        if st is not None:
            return "log path is a symbolic link" if stat.S_ISLNK(st.st_mode) else None
        # the file is gone: only recreate it in a directory we trust (conmon's checks)
        parent = os.path.dirname(os.path.abspath(self.path))
        if os.path.realpath(parent) != parent:
            return "parent path contains symlinks"
        try:
            pst = os.stat(parent)
        except OSError as e:
            return f"cannot stat parent directory: {e.strerror}"
        if pst.st_mode & stat.S_IWOTH:
            return f"parent directory is world-writable: {parent}"
        if pst.st_uid not in (0, os.getuid(), os.geteuid()):
            return f"parent directory owned by unexpected uid {pst.st_uid}: {parent}"
        if self.allowlist and not any(
                parent == os.path.realpath(d) or parent.startswith(os.path.realpath(d) + "/")
                for d in self.allowlist):
            return "parent directory not in allowlist"
        return None

    def finish(self, sync: bool) -> None:
        self._abandon_cut()
        if self._failed:
            self._report_lost("log file %s: writes still failing at exit")
            self._failed = False
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
