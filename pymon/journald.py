"""journald log driver (§5.5): entries over journald's native protocol.

The protocol is written here rather than taken from systemd-python: that package builds
against libsystemd's headers (a build dependency on every machine that installs pymon),
and its `journal` module pulls in logging, uuid and datetime (several MiB per monitor) to
offer what is, for us, one datagram per entry (https://systemd.io/JOURNAL_NATIVE_PROTOCOL).

Line assembly follows conmon: a piece without a newline is kept (per stream, up to
LINE_MAX bytes) until its newline arrives and is then sent as one full entry; a piece that
does not fit is sent with CONTAINER_PARTIAL_MESSAGE=true; at exit a kept piece is flushed
with that flag. conmon's reads are 8 KiB, ours are larger, so a chunk is cut into 8 KiB
pieces first and the entries come out as they would under conmon.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import struct

from pymon.diag import log
from pymon.logs import LogSink

JOURNAL_SOCKET = "/run/systemd/journal/socket"
LINE_MAX = 8192
SEND_WAIT = 1.0  # seconds to wait for room in journald's queue before dropping an entry
TRUNC_ID_LEN = 12
PRIORITY = {b"stdout": b"PRIORITY=6", b"stderr": b"PRIORITY=3"}


def encode_field(name: bytes, value: bytes) -> bytes:
    """One field: NAME=value\\n, or the binary-safe form when value holds a newline."""
    if b"\n" not in value:
        return name + b"=" + value + b"\n"
    return name + b"\n" + struct.pack("<Q", len(value)) + value + b"\n"


def encode_assignment(field: bytes) -> bytes:
    name, _, value = field.partition(b"=")
    return encode_field(name, value)


class JournaldLog(LogSink):
    def __init__(self, cid: str, name: str | None, tag: str | None, labels: tuple[str, ...],
                 partial_flag: bool = True, socket_path: str = JOURNAL_SOCKET) -> None:
        ident = tag if tag is not None else (name if name is not None else cid[:TRUNC_ID_LEN])
        fixed_head = [encode_field(b"CONTAINER_ID_FULL", cid.encode())]
        fixed_tail = [encode_field(b"CONTAINER_ID", cid[:TRUNC_ID_LEN].encode())]
        if tag is not None:
            fixed_tail.append(encode_field(b"CONTAINER_TAG", tag.encode()))
        if name is not None:
            fixed_tail.append(encode_field(b"CONTAINER_NAME", name.encode()))
        fixed_tail.append(encode_field(b"SYSLOG_IDENTIFIER", ident.encode()))
        self.head = b"".join(fixed_head)
        self.tail = b"".join(fixed_tail)
        self.partial_field = encode_field(b"CONTAINER_PARTIAL_MESSAGE", b"true") if partial_flag else b""
        self.labels = b"".join(encode_assignment(label.encode()) for label in labels)
        self.partial = {b"stdout": b"", b"stderr": b""}
        self.path = socket_path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.sock.setblocking(False)
        self._warned = False

    def entry(self, message: bytes, stream: bytes, partial: bool) -> bytes:
        return b"".join((encode_field(b"MESSAGE", message), self.head, PRIORITY[stream] + b"\n",
                         self.tail, self.partial_field if partial else b"", self.labels))

    def write(self, chunk: bytes, stream: bytes, ts: bytes) -> None:
        for start in range(0, len(chunk), LINE_MAX):
            self._piece(chunk[start:start + LINE_MAX], stream)

    def _piece(self, buf: bytes, stream: bytes) -> None:
        while buf:
            nl = buf.find(b"\n")
            line_len = len(buf) if nl < 0 else nl + 1
            kept = self.partial[stream]
            if nl < 0 and line_len < LINE_MAX - len(kept):
                self.partial[stream] = kept + buf  # wait for the rest of the line
                return
            self._send(self.entry(kept + buf[:line_len], stream, partial=nl < 0))
            self.partial[stream] = b""
            buf = buf[line_len:]

    def finish(self, sync: bool) -> None:
        for stream in (b"stdout", b"stderr"):
            if self.partial[stream]:
                self._send(self.entry(self.partial[stream], stream, partial=True))
                self.partial[stream] = b""

    def close(self) -> None:
        self.sock.close()

    def _send(self, payload: bytes) -> None:
        for _ in range(2):
            try:
                self.sock.sendto(payload, self.path)
                self._warned = False
                return
            except BlockingIOError:
                # journald is behind: wait a little for room (this slows the relay, and so
                # the container, as libsystemd's blocking send would), then drop
                select.select([], [self.sock], [], SEND_WAIT)
            except OSError as e:
                if e.errno == errno.EMSGSIZE:
                    self._send_memfd(payload)
                    return
                self._warn(e)
                return
        self._warn(OSError(errno.EAGAIN, "journald is not keeping up: entry dropped"))

    def _send_memfd(self, payload: bytes) -> None:
        """Entries larger than a datagram go in a sealed memfd (native protocol)."""
        import fcntl

        fd = os.memfd_create("pymon-journal", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.write(fd, payload)
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW |
                        fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL)
            self.sock.sendmsg([], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", fd))],
                              0, self.path)
        except OSError as e:
            self._warn(e)
        finally:
            os.close(fd)

    def _warn(self, e: OSError) -> None:
        if not self._warned:  # once per failure streak: never one warning per entry
            log.warning("sd_journal_sendv: %s", e.strerror or e)
            self._warned = True
