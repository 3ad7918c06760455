"""Is the server's code still the installed code? After an upgrade a running server must
not serve new launchers: it compares the files it imported (pymon's modules and its
compiled module) with what is on disk now, on every request (~40 stats, ~50 us)."""

from __future__ import annotations

import os
import sys


def _files() -> list[str]:
    out = []
    for name, module in list(sys.modules.items()):
        if name == "pymon" or name.startswith("pymon."):
            path = getattr(module, "__file__", None)
            if path:
                out.append(path)
    return sorted(set(out))


def _state(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


class CodeStamp:
    def __init__(self) -> None:
        self.files = {path: _state(path) for path in _files()}

    def changed(self) -> str | None:
        """The first file that differs from when the stamp was taken, or None."""
        for path, state in self.files.items():
            if _state(path) != state:
                return path
        return None
