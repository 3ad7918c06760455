"""Is the server's code still the installed code? After an upgrade a running server must
not serve new launchers: it compares the files it imported (pymon's modules and its
compiled module) with what is on disk now.

Comparing them all (~60 stats) took ~180 us of every request, a tenth of the launcher's
2 ms budget. So the directories that hold them are watched with inotify, and the stats run
only when something happened there since the last check: any change to a file, a file
created, removed or renamed in or out, the directory itself removed or moved. A change
between two requests is queued on the inotify fd before the next request is read, so
nothing is missed. Without inotify (no instance or watch left: ENOSPC, EMFILE) every check
compares them all, as before.
"""

from __future__ import annotations

import os
import sys

from pymon import _native

# Everything that can change a file's content or what a path names
_WATCH = (_native.IN_MODIFY | _native.IN_ATTRIB | _native.IN_CLOSE_WRITE
          | _native.IN_MOVED_FROM | _native.IN_MOVED_TO | _native.IN_CREATE | _native.IN_DELETE
          | _native.IN_DELETE_SELF | _native.IN_MOVE_SELF)


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
    def __init__(self, files: list[str] | None = None) -> None:
        """`files`: pymon's own (every module imported so far) unless given."""
        paths = _files() if files is None else files
        # Watched before the files are read: a change in between shows up either way
        self.watch: int | None = None
        try:
            fd = _native.inotify_init()
            try:
                for directory in sorted({os.path.dirname(p) for p in paths}):
                    _native.inotify_add_watch(fd, directory, _WATCH)
            except OSError:
                os.close(fd)
                raise
            self.watch = fd
        except OSError:
            pass
        self.files = {path: _state(path) for path in paths}

    def _quiet(self) -> bool:
        """Nothing happened in the watched directories since the last call."""
        if self.watch is None:
            return False
        happened = False
        try:
            while os.read(self.watch, 65536):
                happened = True
        except BlockingIOError:
            pass
        except OSError:
            return False  # e.g. the queue overflowed into an error: compare everything
        return not happened

    def changed(self) -> str | None:
        """The first file that differs from when the stamp was taken, or None."""
        if self._quiet():
            return None
        for path, state in self.files.items():
            if _state(path) != state:
                return path
        return None

    def close(self) -> None:
        if self.watch is not None:
            os.close(self.watch)
            self.watch = None
