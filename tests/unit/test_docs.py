"""The man page names every option the parser accepts (hidden aliases aside)."""

from __future__ import annotations

from pathlib import Path

from pymon.cli import OPTIONS

MAN = Path(__file__).resolve().parents[2] / "packaging" / "pymon.8.md"


def test_man_page_lists_every_option() -> None:
    page = MAN.read_text()
    for long, short, _, _, text in OPTIONS:
        if text:  # hidden, deprecated aliases have no help text
            assert f"**--{long}**" in page, long
            if short:
                assert f"**-{short}**, **--{long}**" in page, long

