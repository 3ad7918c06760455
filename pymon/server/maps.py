"""Reading /proc/PID/maps: the private writable mappings, which the server both snapshots
(snapshot.py) and offers to KSM (ksm.py)."""

from __future__ import annotations

from typing import NamedTuple

# the kernel's own mappings: neither copied nor offered
KERNEL = ("[vvar]", "[vdso]", "[vsyscall]")


class Mapping(NamedTuple):
    start: int
    end: int
    file_backed: bool  # a file's private mapping (a library's .data), not anonymous memory
    name: str  # the path, "[heap]", "[stack]", ... or "" for anonymous memory


def private_writable(maps: str) -> list[Mapping]:
    """The mappings of a /proc/PID/maps text that are private and writable ("rw?p"), in
    order; lines that are not such a mapping are skipped."""
    out = []
    for line in maps.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) < 5 or fields[1][:2] != "rw" or fields[1][3:4] != "p":
            continue
        start, _, end = fields[0].partition("-")
        name = fields[5].strip() if len(fields) == 6 else ""
        out.append(Mapping(int(start, 16), int(end, 16), fields[4] != "0", name))
    return out
