"""Settled code (pymon/server/settle.py) runs without writing to its code object: a
monitor that runs it keeps sharing the server's page. Code that had warmed up is left as
it was, quickened."""

from __future__ import annotations

import ctypes
import sys
import types

import pytest

from pymon.server import settle

pytestmark = [
    pytest.mark.timeout(10),
    pytest.mark.skipif(sys.version_info[:2] != (3, 11), reason="co_warmup is CPython 3.11's"),
]

def work(n: int) -> int:
    total = 0
    for i in range(n):
        total += len(str(i))
    return total


def fresh() -> types.FunctionType:
    """`work` on a code object of its own that has never run (the module's is shared by
    every test)."""
    return types.FunctionType(work.__code__.replace(), globals())


def raw(code: types.CodeType) -> bytes:
    """The code object's memory but its reference count (which any call moves and
    restores)."""
    return ctypes.string_at(id(code) + 8, sys.getsizeof(code) - 8)


def quickened(code: types.CodeType) -> bool:
    """Its bytecode rewritten in the adaptive form (RESUME_QUICK and the like): the
    in-place instructions no longer read as co_code does."""
    return code.co_code not in raw(code)


def test_the_layout_is_recognised() -> None:
    assert settle.layout_ok()


def test_settled_code_is_never_written_by_running_it() -> None:
    work = fresh()
    assert settle.counting(work.__code__)
    assert settle.settle([work.__code__]) == 1
    before = raw(work.__code__)
    for _ in range(50):  # far past the 8 calls that would quicken it
        assert work(20) == 30
    assert raw(work.__code__) == before
    assert not quickened(work.__code__) and not settle.counting(work.__code__)


def test_unsettled_code_writes_itself_when_run() -> None:
    """What settling prevents: the same calls count, then quicken, in the code object."""
    work = fresh()
    before = raw(work.__code__)
    work(20)
    assert raw(work.__code__) != before  # the count moved
    for _ in range(50):
        work(20)
    assert quickened(work.__code__)


def test_warm_code_is_left_quickened() -> None:
    warm, cold = fresh(), fresh()
    for _ in range(20):
        warm(20)
    assert settle.settle([warm.__code__, cold.__code__]) == 1  # only the cold one
    assert quickened(warm.__code__) and not quickened(cold.__code__)


def test_nested_code_is_found() -> None:
    """Comprehensions and inner functions have code objects of their own, in co_consts."""
    def outer() -> list[int]:
        return [i for i in range(3)]

    inner = [c for c in outer.__code__.co_consts if isinstance(c, types.CodeType)]
    assert inner and {id(c) for c in inner} <= {id(c) for c in settle.all_code()}


def test_an_unknown_layout_settles_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    work = fresh()
    monkeypatch.setattr(settle, "layout_ok", lambda: False)
    assert settle.settle([work.__code__]) == 0
    assert settle.counting(work.__code__)
