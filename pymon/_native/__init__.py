"""Typed wrappers over the few syscalls the stdlib does not expose (see _build.py)."""

from __future__ import annotations

import os

from pymon._native._pymon_native import ffi, lib


def _check(ret: int, what: str) -> int:
    if ret < 0:
        err = ffi.errno
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


def set_child_subreaper(on: bool) -> None:
    """prctl(PR_SET_CHILD_SUBREAPER): orphans below us (the container's init once the
    runtime exits) are re-parented to us, so we can reap them and read their status."""
    _check(lib.prctl(lib.PR_SET_CHILD_SUBREAPER, 1 if on else 0, 0, 0, 0), "PR_SET_CHILD_SUBREAPER")


def is_child_subreaper() -> bool:
    out = ffi.new("int *")
    _check(lib.prctl(lib.PR_GET_CHILD_SUBREAPER, int(ffi.cast("unsigned long", out)), 0, 0, 0),
           "PR_GET_CHILD_SUBREAPER")
    return bool(out[0])


def set_pdeathsig(sig: int) -> None:
    """prctl(PR_SET_PDEATHSIG): the kernel sends `sig` to us when our parent dies."""
    _check(lib.prctl(lib.PR_SET_PDEATHSIG, sig, 0, 0, 0), "PR_SET_PDEATHSIG")
