"""pymon's own diagnostics: conmon's line format, levels, rate limiting."""

from __future__ import annotations

import pytest

from pymon import diag


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    out: list[bytes] = []
    monkeypatch.setattr(diag.Diag, "write_stderr", staticmethod(out.append))
    return out


def test_format_and_levels(captured: list[bytes]) -> None:
    d = diag.Diag()
    d.configure("info", False, "cid", None)
    d.info("hello %s", "there")
    d.debug("hidden")
    d.error("bad")
    assert captured == [b"[conmon:i]: hello there\n", b"[conmon:e]: bad\n"]


def test_rate_limited(captured: list[bytes]) -> None:
    now = [1000.0]
    d = diag.Diag(clock=lambda: now[0])
    for i in range(100):
        d.warning("flood %d", i)
    assert len(captured) == diag.BURST
    now[0] += 1.0  # one second later
    d.warning("after")
    assert captured[-1] == (b"[conmon:w]: after (%d earlier messages suppressed)\n"
                            % (100 - diag.BURST))


def test_report_is_shown_at_any_level(captured: list[bytes]) -> None:
    d = diag.Diag()
    d.configure("error", False, "cid", None)
    d.info("hidden")
    d.report("state: %s", "ok")  # asked for by the operator (SIGUSR1)
    assert captured == [b"[conmon:i]: state: ok\n"]
