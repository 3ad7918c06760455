"""A real pymon-server for tests: started on a private socket, ready once it says so on
stderr (an event, not a sleep), stopped with SIGTERM."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

SERVER = [sys.executable, "-m", "pymon.server"]


class WarmServer:
    def __init__(self, socket_path: Path, *, cmd: list[str] | None = None,
                 env: dict[str, str] | None = None, start: bool = True) -> None:
        self.socket = socket_path
        self.cmd = cmd or SERVER
        self.base_env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = b""
        if start:
            self.start()

    def start(self, timeout: float = 30) -> None:
        self.proc = subprocess.Popen([*self.cmd, "--socket", str(self.socket), "--verbose"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, env=self.base_env,
                                     start_new_session=True, cwd="/")  # -m imports from cwd
        self.wait_for(b"serving on", timeout)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def env(self) -> dict[str, str]:
        # a loaded CI machine may take longer than the production 2 ms budget: a warm test
        # must not silently run cold (the budget itself is tested on its own)
        return {"PYMON_SOCKET": str(self.socket), "PYMON_SERVER_BUDGET_MS": "5000"}

    def wait_for(self, text: bytes, timeout: float = 10) -> bytes:
        """Read the server's stderr until `text` appears; returns everything read."""
        assert self.proc is not None and self.proc.stderr is not None
        deadline = time.monotonic() + timeout
        fd = self.proc.stderr.fileno()
        while text not in self.log:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError(f"server never said {text!r}: {self.log.decode()}")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise RuntimeError(f"server exited: {self.log.decode()}")
            self.log += chunk
        return self.log

    def said(self) -> str:
        """Everything the server has said so far (read without waiting), for a failure's
        message."""
        if self.proc is not None and self.proc.stderr is not None:
            fd = self.proc.stderr.fileno()
            while select.select([fd], [], [], 0)[0]:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                self.log += chunk
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
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        return code
