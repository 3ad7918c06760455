"""pymon's own diagnostics (not the container's log): conmon's `[conmon:X]: text` lines on
stderr, and syslog with --syslog. Kept import-light: it is used on the start-up path.

In the monitor stderr is /dev/null (contract §2.3 step 10), so after the fork only syslog
carries messages; P0's messages (argv errors) reach the engine's stderr.
"""

from __future__ import annotations

import os
import time

# Annotations are strings here (PEP 563), so Callable is needed by type checkers only; this
# module is on the start-up path and collections.abc costs ~1.5 ms to import.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

# At most BURST messages at once, then RATE per second: a misbehaving container (a ctl
# writer in a loop, say) must not turn the monitor into a syslog flood.
BURST = 20
RATE = 5.0

_LEVELS = {"error": 0, "fatal": 0, "panic": 0, "warn": 1, "warning": 1, "info": 2,
           "debug": 3, "trace": 4}
_TAGS = ("e", "w", "i", "d", "d")


class Diag:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.level = 1
        self.use_syslog = False
        self.ident = ""
        self.tokens = float(BURST)
        self.last = clock()
        self.suppressed = 0

    def _allow(self) -> bool:
        now = self.clock()
        self.tokens = min(BURST, self.tokens + (now - self.last) * RATE)
        self.last = now
        if self.tokens < 1:
            self.suppressed += 1
            return False
        self.tokens -= 1
        return True

    def configure(self, level: str, use_syslog: bool, cid: str, tag: str | None) -> None:
        self.level = _LEVELS.get(level, 1)
        self.use_syslog = use_syslog
        logcid = f"{cid}: {tag}" if tag else cid
        self.ident = logcid[:20]

    def _emit(self, lvl: int, fmt: str, args: tuple[object, ...], always: bool = False) -> None:
        if (lvl > self.level and not always) or not self._allow():
            return
        text = fmt % args if args else fmt
        if self.suppressed:
            text += f" ({self.suppressed} earlier messages suppressed)"
            self.suppressed = 0
        self.write_stderr(f"[conmon:{_TAGS[lvl]}]: {text}\n".encode(errors="replace"))
        if self.use_syslog:
            import syslog

            prio = syslog.LOG_ERR if lvl == 0 else syslog.LOG_INFO
            syslog.syslog(prio, f"conmon {self.ident} <{_TAGS[lvl]}>: {text}")

    @staticmethod
    def write_stderr(data: bytes) -> None:
        try:
            os.write(2, data)
        except OSError:
            pass

    def error(self, fmt: str, *args: object) -> None:
        self._emit(0, fmt, args)

    def warning(self, fmt: str, *args: object) -> None:
        self._emit(1, fmt, args)

    def info(self, fmt: str, *args: object) -> None:
        self._emit(2, fmt, args)

    def debug(self, fmt: str, *args: object) -> None:
        self._emit(3, fmt, args)

    def report(self, fmt: str, *args: object) -> None:
        """An info message asked for by the operator (SIGUSR1): shown at any log level."""
        self._emit(2, fmt, args, always=True)


log = Diag()
