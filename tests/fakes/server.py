"""A real pymon-server for tests: started on a private socket, ready once it says so on
stderr (an event, not a sleep), stopped with SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

SERVER = [sys.executable, "-m", "pymon.server"]


class WarmServer:
    """Its stderr (`--verbose`: a line per launch) is read as it comes, by a thread: a
    session-wide server outlives thousands of launches, and a full pipe would stall it."""

    def __init__(self, socket_path: Path, *, cmd: list[str] | None = None,
                 env: dict[str, str] | None = None, start: bool = True) -> None:
        self.socket = socket_path
        self.cmd = cmd or SERVER
        self.base_env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = b""
        self.changed = threading.Condition()  # notified when the log grows or ends
        self.ended = False
        self.reader: threading.Thread | None = None
        if start:
            self.start()

    def start(self, timeout: float = 30) -> None:
        self.proc = subprocess.Popen([*self.cmd, "--socket", str(self.socket), "--verbose"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, env=self.base_env,
                                     start_new_session=True, cwd="/")  # -m imports from cwd
        self.ended = False
        self.reader = threading.Thread(target=self._read, args=(self.proc.stderr.fileno(),),
                                       daemon=True)
        self.reader.start()
        self.wait_for(b"serving on", timeout)

    def _read(self, fd: int) -> None:
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                chunk = b""
            with self.changed:
                if not chunk:
                    self.ended = True
                    self.changed.notify_all()
                    return
                self.log += chunk
                self.changed.notify_all()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def env(self) -> dict[str, str]:
        # a loaded CI machine may take longer than the production 2 ms budget: a warm test
        # must not silently run cold (the budget itself is tested on its own)
        return {"PYMON_SOCKET": str(self.socket), "PYMON_SERVER_BUDGET_MS": "5000"}

    def wait_for(self, text: bytes, timeout: float = 10) -> bytes:
        """Wait until the server has said `text`; returns everything it said."""
        with self.changed:
            self.changed.wait_for(lambda: text in self.log or self.ended, timeout)
            if text in self.log:
                return self.log
            if self.ended:
                raise RuntimeError(f"server exited: {self.log.decode()}")
        raise TimeoutError(f"server never said {text!r}: {self.log.decode()}")

    def said(self) -> str:
        """Everything the server has said so far, for a failure's message."""
        with self.changed:
            return self.log.decode(errors="replace")

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        if self.reader is not None:
            self.reader.join(10)  # EOF once the server and its spare are gone
        if self.proc.stderr is not None and not (self.reader and self.reader.is_alive()):
            self.proc.stderr.close()  # (not under a read still blocked in the thread)
        return code
