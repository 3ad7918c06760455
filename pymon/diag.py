"""pymon's own diagnostics (not the container's log): conmon's `[conmon:X]: text` lines on
stderr, and syslog with --syslog. Kept import-light: it is used on the start-up path.

In the monitor stderr is /dev/null (contract §2.3 step 10), so after the fork only syslog
carries messages; P0's messages (argv errors) reach the engine's stderr.
"""

from __future__ import annotations

import os

_LEVELS = {"error": 0, "fatal": 0, "panic": 0, "warn": 1, "warning": 1, "info": 2,
           "debug": 3, "trace": 4}
_TAGS = ("e", "w", "i", "d", "d")


class Diag:
    def __init__(self) -> None:
        self.level = 1
        self.use_syslog = False
        self.ident = ""

    def configure(self, level: str, use_syslog: bool, cid: str, tag: str | None) -> None:
        self.level = _LEVELS.get(level, 1)
        self.use_syslog = use_syslog
        logcid = f"{cid}: {tag}" if tag else cid
        self.ident = logcid[:20]

    def _emit(self, lvl: int, fmt: str, args: tuple[object, ...]) -> None:
        if lvl > self.level:
            return
        text = fmt % args if args else fmt
        try:
            os.write(2, f"[conmon:{_TAGS[lvl]}]: {text}\n".encode(errors="replace"))
        except OSError:
            pass
        if self.use_syslog:
            import syslog

            prio = syslog.LOG_ERR if lvl == 0 else syslog.LOG_INFO
            syslog.syslog(prio, f"conmon {self.ident} <{_TAGS[lvl]}>: {text}")

    def error(self, fmt: str, *args: object) -> None:
        self._emit(0, fmt, args)

    def warning(self, fmt: str, *args: object) -> None:
        self._emit(1, fmt, args)

    def info(self, fmt: str, *args: object) -> None:
        self._emit(2, fmt, args)

    def debug(self, fmt: str, *args: object) -> None:
        self._emit(3, fmt, args)


log = Diag()
