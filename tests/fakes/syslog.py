"""A private /dev/log for a monitor under test: pymon's diagnostics (--syslog) reach the
test, and the host's /dev/log (or its absence) is never touched.

The monitor runs under `unshare --mount` with /dev replaced, in that namespace only, by a
tmpfs holding bind mounts of the host's device nodes plus our datagram socket at /dev/log
(a bind mount needs an existing target, and creating /dev/log on the host would capture
every other process's syslog). The namespace, and its mounts, end with the monitor."""

from __future__ import annotations

import os
import re
import select
import socket
import time
from pathlib import Path

SETUP = """set -e
T="$1"; shift
mkdir -p "$T/olddev"
mount --rbind /dev "$T/olddev"
mount -t tmpfs -o mode=0755 tmpfs /dev
for n in null zero full random urandom tty ptmx; do
    touch "/dev/$n"; mount --bind "$T/olddev/$n" "/dev/$n"
done
for d in pts shm mqueue; do
    [ -d "$T/olddev/$d" ] || continue
    mkdir "/dev/$d"; mount --rbind "$T/olddev/$d" "/dev/$d"
done
ln -s /proc/self/fd /dev/fd; ln -s fd/0 /dev/stdin; ln -s fd/1 /dev/stdout; ln -s fd/2 /dev/stderr
umount -l "$T/olddev"
touch /dev/log; mount --bind "$T/log.sock" /dev/log
exec "$@"
"""


class PrivateSyslog:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(directory / "log.sock"))
        self.messages: list[str] = []
        # Session(wrapper=...): the monitor (P0, then M) runs inside the namespace
        self.wrapper = ["unshare", "--mount", "--propagation", "private", "sh", "-c", SETUP,
                        "sh", str(directory)]

    def wait_for(self, pattern: str, timeout: float = 10) -> re.Match[str]:
        """The first message (received so far or arriving within `timeout`) matching."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for text in self.messages[seen:]:
                m = regex.search(text)
                if m:
                    return m
            seen = len(self.messages)
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.sock], [], [], left)[0]:
                raise TimeoutError(f"no syslog message matching {pattern!r}; got "
                                   f"{self.messages!r:.2000}")
            self.messages.append(self.sock.recv(65536).decode(errors="replace"))

    def close(self) -> None:
        self.sock.close()
        try:
            os.unlink(self.dir / "log.sock")
        except OSError:
            pass
