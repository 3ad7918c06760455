"""Settling the server's code before its snapshot, so that running it never writes to it.

CPython 3.11 counts the first calls of each code object in the object itself (co_warmup,
from -8 up to 0) and then rewrites its bytecode into the adaptive form ("quickening").
Code that the warm-up ran often enough is quickened in the server, and its monitors share
it. Code that it did not (a monitor's set-up, its argv and config checks) counts its calls in
every monitor that runs it: each such call writes the code object, so each monitor holds a
copy of that page, and since the count stays changed, the give-back (snapshot.py) never
finds it equal to the snapshot. ~115 of the ~790 pages an idle monitor held were such code
objects (measured: pages that differ from the snapshot, word by word, and the code objects
whose count had moved).

So once warm, every code object still counting is marked as counted out without being
quickened (co_warmup = 0): CPython then runs it as it is, unspecialized, and writes
nothing to it, here or in any monitor. Such code runs a few times per monitor, where
specializing would not pay anyway; the hot paths (trio's loop, the relay) are warmed
first (warm.py), so they are quickened and left as they are. The server's own request
path is settled too: left to quicken in the server, its writes after the snapshot cost
each monitor forked before them its copy of those pages (measured: 2.88, 2.93 MiB per idle
monitor against 2.75, 2.77 settled), for no server CPU that the benches could see.

CPython 3.11 only: 3.12 has no co_warmup. The field's place is checked on a fresh code
object first; anything unexpected and nothing is written.
"""

from __future__ import annotations

import gc
import sys
import types
from collections.abc import Iterable

from pymon import _native

# struct PyCodeObject in CPython 3.11 (x86_64 and other LP64): the head, co_consts,
# co_names, co_exceptiontable, then `int co_flags; short co_warmup; ...`
_CO_FLAGS = 48
_CO_WARMUP = 52
_WARMUP_START = -8  # QUICKENING_WARMUP_DELAY


def _probe() -> int:
    return 1


def layout_ok() -> bool:
    """CPython 3.11 with co_warmup where we expect it: a fresh code object counts -8,
    then -7 after one call."""
    if sys.implementation.name != "cpython" or sys.version_info[:2] != (3, 11) \
            or sys.maxsize != 2**63 - 1:
        return False
    fresh = types.FunctionType(_probe.__code__.replace(), {})  # a copy: never called yet
    code = fresh.__code__
    if _native.read_i32(id(code) + _CO_FLAGS) != code.co_flags \
            or _native.read_i16(id(code) + _CO_WARMUP) != _WARMUP_START:
        return False
    fresh()
    return _native.read_i16(id(code) + _CO_WARMUP) == _WARMUP_START + 1


def all_code() -> list[types.CodeType]:
    """Every code object reachable from a live function, nested ones included (code
    objects are not tracked by the collector; functions are)."""
    seen: dict[int, types.CodeType] = {}
    todo = [o.__code__ for o in gc.get_objects() if isinstance(o, types.FunctionType)]
    while todo:
        code = todo.pop()
        if id(code) not in seen:
            seen[id(code)] = code
            todo += [c for c in code.co_consts if isinstance(c, types.CodeType)]
    return list(seen.values())


def counting(code: types.CodeType) -> bool:
    """Still counting its first calls (not quickened, not settled)."""
    return _native.read_i16(id(code) + _CO_WARMUP) < 0


def settle(codes: Iterable[types.CodeType] | None = None) -> int:
    """Mark every code object that is still counting (of `codes`, or of the process) as
    counted out. Returns how many were (0 where the layout is not CPython 3.11's)."""
    if not layout_ok():
        return 0
    settled = 0
    for code in all_code() if codes is None else codes:
        if counting(code):
            _native.write_i16(id(code) + _CO_WARMUP, 0)
            settled += 1
    return settled
