"""Joining the launcher's cgroups. The engine moves the process it executed (the launcher)
into the monitor's cgroup before it writes the start byte; a monitor forked by the server
starts in the server's cgroups and must join the launcher's before it forks anything, so
that the runtime and the container start there, as under a cold monitor.

The parsing is pure (unit-tested); `join` writes cgroup.procs files.
"""

from __future__ import annotations

import os

from pymon.cli import Frozen
from pymon.procattrs import read_small


class Mount(Frozen):
    """One cgroup hierarchy's mount: v1 controllers (`name=systemd` included) or v2."""

    __slots__ = ("controllers", "root", "point")
    controllers: frozenset[str]  # the super options for v1; empty for cgroup2
    root: str  # the cgroup the mount shows at its mount point
    point: str

    def __init__(self, controllers: frozenset[str], root: str, point: str) -> None:
        self._init({"controllers": controllers, "root": root, "point": point})


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1:i + 4].isdigit() and i + 3 < len(field):
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[Mount]:
    """The cgroup and cgroup2 mounts of a /proc/PID/mountinfo."""
    mounts = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3 or tail[0] not in ("cgroup", "cgroup2"):
            continue
        controllers: frozenset[str] = frozenset()
        if tail[0] == "cgroup":
            # the super options: controllers, name=X, and flags (rw, xattr, ...); a flag
            # in the set is harmless since hierarchies are matched by their controllers
            controllers = frozenset(tail[2].split(","))
        mounts.append(Mount(controllers, _unescape(fields[3]), _unescape(fields[4])))
    return mounts


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """/proc/PID/cgroup as {controllers field: path}; "" is the cgroup2 hierarchy."""
    out = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            out[parts[1]] = parts[2]
    return out


def procs_files(theirs: dict[str, str], ours: dict[str, str],
                mounts: list[Mount]) -> list[str]:
    """The cgroup.procs files to write our pid to so that we share `theirs`."""
    files = []
    for key, path in theirs.items():
        if ours.get(key) == path:
            continue
        wanted = frozenset(key.split(","))
        for m in mounts:
            # a v1 controller belongs to one hierarchy only, so any mount showing it will do
            if (wanted <= m.controllers) if key else not m.controllers:
                root = m.root.rstrip("/")
                if path != root and not path.startswith(root + "/"):
                    continue  # that cgroup is not visible through this mount
                files.append(os.path.join(m.point, path[len(root):].lstrip("/"),
                                          "cgroup.procs"))
                break
        else:
            raise OSError(f"no mount for cgroup hierarchy {key or 'cgroup2'}:{path}")
    return files


def read_mounts() -> list[Mount]:
    with open("/proc/self/mountinfo") as f:
        return parse_mountinfo(f.read())


def join(pid: int, mounts: list[Mount] | None = None) -> None:
    """Move this process into the cgroups of `pid`. Raises OSError."""
    join_listed(read_small(f"/proc/{pid}/cgroup"), mounts)


def join_listed(proc_cgroup: str, mounts: list[Mount] | None = None) -> None:
    """Move this process into the cgroups listed in `proc_cgroup` (a /proc/PID/cgroup text
    read earlier: a killed monitor's, for its replacement). Raises OSError."""
    theirs = parse_proc_cgroup(proc_cgroup)
    ours = parse_proc_cgroup(read_small("/proc/self/cgroup"))
    if theirs == ours:
        return
    files = procs_files(theirs, ours, mounts if mounts is not None else read_mounts())
    me = str(os.getpid()).encode()
    for path in files:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, me)
        finally:
            os.close(fd)
