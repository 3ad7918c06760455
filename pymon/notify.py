"""sd_notify proxy (§12.2): datagrams from the container's `<bundle>/notify/notify.sock`
are filtered to the lines systemd acts on for a container and sent to the host socket."""

from __future__ import annotations

import socket

import trio

from pymon.diag import log

ALLOWED = (b"READY=1", b"RELOADING=1", b"STOPPING=1", b"WATCHDOG=1", b"WATCHDOG=trigger")
ALLOWED_PREFIXES = (b"STATUS=", b"ERRNO=", b"BUSERROR=", b"MONOTONIC_USEC=")
DATAGRAM_MAX = 32768


def filter_notify(datagram: bytes) -> bytes | None:
    """Keep only conmon's allowlist (no MAINPID=, no FDSTORE=, ...), joined with \\n."""
    lines = datagram.replace(b"\r", b"\n").split(b"\n")
    kept = [ln for ln in lines if ln in ALLOWED or ln.startswith(ALLOWED_PREFIXES)]
    return b"\n".join(kept) if kept else None


async def relay_notify(container_fd: int, host_path: str) -> None:
    inside = socket.socket(fileno=container_fd)
    inside.setblocking(False)
    host = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    host.setblocking(False)
    try:
        while True:
            try:
                data = inside.recv(DATAGRAM_MAX)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(inside)
                continue
            message = filter_notify(data)
            if message is None:
                continue
            try:
                host.sendto(message, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL, host_path)
            except OSError as e:
                log.warning("sd-notify: send to %s failed: %s", host_path, e.strerror)
    finally:
        host.close()
