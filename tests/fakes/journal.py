"""A private systemd-journald for tests: in its own mount namespace, with volatile storage
on tmpfs, so the host's journal (if any) is never touched. Processes that should log to it
run under `nsenter -t PID -m`."""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path

JOURNALD = next((p for p in ("/lib/systemd/systemd-journald", "/usr/lib/systemd/systemd-journald")
                 if os.path.exists(p)), None)

SETUP = """set -e
mount -t tmpfs -o mode=0755 tmpfs /run/systemd
mkdir -p /run/systemd/journal /run/systemd/journald.conf.d /run/log
mount -t tmpfs -o mode=0755 tmpfs /run/log
[ ! -d /var/log/journal ] || mount -t tmpfs tmpfs /var/log/journal
printf '%s\\n' '[Journal]' Storage=volatile ReadKMsg=no ForwardToSyslog=no ForwardToWall=no \\
    ForwardToConsole=no RateLimitBurst=0 > /run/systemd/journald.conf.d/test.conf
exec {journald}
"""


class PrivateJournal:
    def __init__(self, log: Path) -> None:
        assert JOURNALD, "systemd-journald is not installed"
        # the child keeps its own copy of the log fd; ours is closed once it is spawned
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                 SETUP.format(journald=JOURNALD)],
                stdout=out, stderr=subprocess.STDOUT)
        self.prefix = ["nsenter", "-t", str(self.proc.pid), "-m", "--"]
        deadline = time.monotonic() + 10
        while not self._socket_ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("journald did not start: " + log.read_text())
            time.sleep(0.05)

    def _socket_ready(self) -> bool:
        return subprocess.run([*self.prefix, "test", "-S", "/run/systemd/journal/socket"],
                              capture_output=True).returncode == 0

    def entries(self, count: int, *matches: str, timeout: float = 15) -> list[dict]:
        """Follow the journal until `count` entries matching `matches` have arrived."""
        proc = subprocess.Popen([*self.prefix, "journalctl", "--system", "--all", "-f", "-n", "all",
                                 "-o", "json", "--no-pager", *matches],
                                stdout=subprocess.PIPE)
        assert proc.stdout is not None
        out: list[dict] = []
        deadline = time.monotonic() + timeout
        buf = b""
        try:
            while len(out) < count:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([proc.stdout], [], [], left)[0]:
                    raise TimeoutError(f"journal: {len(out)} of {count} entries: {out!r:.500}")
                buf += os.read(proc.stdout.fileno(), 65536)
                *lines, buf = buf.split(b"\n")
                out += [json.loads(line) for line in lines if line.strip()]
        finally:
            proc.kill()
            proc.wait()
        return out

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def available() -> bool:
    return JOURNALD is not None and shutil.which("unshare") is not None
