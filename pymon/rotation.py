"""Log rotation policy (pure): which renames make room for a new log file.

With --log-rotate and --log-max-files N, the full file becomes `<path>.1`, older ones move
up to `.N`, and what was `.N` is dropped, so exactly N backups are kept. (conmon shifts
from max(N, 2), so N=1 keeps two backups; we keep what was asked for.)
"""

from __future__ import annotations


def backup_renames(path: str, max_files: int) -> list[tuple[str, str]]:
    """Renames to apply in order, oldest first, before `path` itself moves to `.1`."""
    return [(f"{path}.{i - 1}", f"{path}.{i}") for i in range(max_files, 1, -1)]


def unsafe_path_reason(path: str) -> str | None:
    """A reason to refuse rotating `path` from its text alone (conmon: no `..`)."""
    if ".." in path.split("/"):
        return "log path contains '..'"
    return None
