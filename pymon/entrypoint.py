"""Writes pymon's production entry point: a script that runs Python isolated and fast.

    python -m pymon.entrypoint /usr/libexec/podman/pymon

The script's interpreter line is `PYTHON -IS`: -I so that no PYTHON* variable of the
engine's environment (PYTHONPATH, PYTHONHOME, PYTHONDONTWRITEBYTECODE, ...) can change
pymon, and -S to skip site's start-up work (~2 ms of the ~10 ms before the runtime is
spawned; see bench/startup.py). The directories site would have added for pymon and its
dependencies are written into the script instead, as found by the interpreter that runs
this module.
"""

from __future__ import annotations

import importlib.util
import os
import sys

MODULES = ("pymon", "trio", "msgspec", "cffi", "_cffi_backend", "pyroute2", "sniffio",
           "outcome", "sortedcontainers", "idna", "attr")


def import_roots() -> list[str]:
    """The sys.path entries that hold pymon and its runtime dependencies, in sys.path order."""
    needed = set()
    for name in MODULES:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            continue
        origin = spec.origin
        depth = 2 if spec.submodule_search_locations else 1  # package dir vs module file
        root = origin
        for _ in range(depth):
            root = os.path.dirname(root)
        needed.add(os.path.realpath(root))
    roots: list[str] = []
    for p in sys.path:
        if p and os.path.realpath(p) in needed and p not in roots:
            roots.append(p)
    return roots


def script(python: str, roots: list[str]) -> str:
    return (f"#!{python} -IS\n"
            "# pymon entry point, written by `python -m pymon.entrypoint`; see that module.\n"
            "import sys\n"
            f"sys.path[:0] = {roots!r}\n"
            "from pymon.launch import main\n"
            "sys.exit(main())\n")


def write(dest: str, python: str | None = None, roots: list[str] | None = None,
          compile_: bool = True) -> None:
    tmp = dest + ".tmp"
    with open(tmp, "w") as f:
        f.write(script(python or sys.executable, import_roots() if roots is None else roots))
    os.chmod(tmp, 0o755)
    os.rename(tmp, dest)
    if compile_:
        # compile now: with -I a later run may not be allowed to write __pycache__
        import compileall

        compileall.compile_dir(os.path.dirname(os.path.abspath(__file__)), quiet=1)


def main(argv: list[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m pymon.entrypoint",
                                 description="Write pymon's isolated entry point script.")
    ap.add_argument("dest", help="where to write it, e.g. /usr/libexec/podman/pymon")
    ap.add_argument("--python", help="interpreter for the #! line (default: this one)")
    ap.add_argument("--path", action="append", default=None,
                    help="import directory to put in the script instead of the ones found "
                         "here (repeatable; packagers: the target's site directory)")
    ap.add_argument("--no-compile", action="store_true", help="do not byte-compile pymon")
    args = ap.parse_args(argv)
    write(args.dest, args.python, args.path, compile_=not args.no_compile)


if __name__ == "__main__":
    main()
