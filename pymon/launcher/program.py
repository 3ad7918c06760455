"""The Python program an entry point runs: the script's lines (`python -m pymon.entrypoint
--python-launcher`) and, on one line, the C launcher's cold path (`python -IS -c`)."""

from __future__ import annotations


def program(roots: list[str], warm: bool = True) -> list[str]:
    # The C launcher has already tried the server when it runs this: warm=False, so a
    # slow or refusing server is not asked twice.
    return ["import sys", f"sys.path[:0] = {roots!r}", "from pymon.launcher.main import main",
            "sys.exit(main())" if warm else "sys.exit(main(warm=False))"]


def bootstrap(roots: list[str], entry: str | None = None) -> str:
    """The script's program on one line, for the C launcher's `python -IS -c`: the cold
    path only, since the C launcher tried the warm one. It ends with a comment naming the entry point, so that `ps` and `pgrep -f ENTRY` find a
    cold monitor by its entry point as they find the script's."""
    line = "; ".join(program(roots, warm=False))
    if not entry or "\n" in entry or "\r" in entry:  # a line break would end the comment
        return line
    return f"{line}  # {entry}"
