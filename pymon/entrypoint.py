"""Writes pymon's production entry point: the C launcher, or a script that runs Python
isolated and fast.

    python -m pymon.entrypoint /usr/libexec/podman/pymon

With a C compiler, the entry point is the compiled launcher (pymon/launcher/pymon_launch.c):
it hands the invocation to a warm `pymon-server` in well under a millisecond and otherwise
execs the interpreter with the same program the script below holds (`bootstrap`). Without
one, or with --python-launcher, it is the script.

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


def _program(roots: list[str], warm: bool = True) -> list[str]:
    # The C launcher has already tried the server when it runs this: warm=False, so a
    # slow or refusing server is not asked twice.
    return ["import sys", f"sys.path[:0] = {roots!r}", "from pymon.launcher.main import main",
            "sys.exit(main())" if warm else "sys.exit(main(warm=False))"]


def bootstrap(roots: list[str], entry: str | None = None) -> str:
    """The script's program on one line, for the C launcher's `python -IS -c`: the cold
    path only, since the C launcher tried the warm one. It
    ends with a comment naming the entry point, so that `ps` and `pgrep -f ENTRY` find a
    cold monitor by its entry point as they find the script's."""
    program = "; ".join(_program(roots, warm=False))
    if not entry or "\n" in entry or "\r" in entry:  # a line break would end the comment
        return program
    return f"{program}  # {entry}"


def script(python: str, roots: list[str]) -> str:
    return (f"#!{python} -IS\n"
            "# pymon entry point, written by `python -m pymon.entrypoint`; see that module.\n"
            + "".join(line + "\n" for line in _program(roots)))


def write(dest: str, python: str | None = None, roots: list[str] | None = None,
          compile_: bool = True, python_launcher: bool = False) -> None:
    python = python or sys.executable
    roots = import_roots() if roots is None else roots
    built = False
    if not python_launcher:
        from pymon.launcher.build import build

        built = build(dest, python, roots)
        if not built:
            print("pymon: writing the Python launcher script instead of the C launcher",
                  file=sys.stderr)
    if not built:
        tmp = dest + ".tmp"
        with open(tmp, "w") as f:
            f.write(script(python, roots))
        os.chmod(tmp, 0o755)
        os.rename(tmp, dest)
    if compile_:
        # compile now: with -I a later run may not be allowed to write __pycache__
        import compileall

        compileall.compile_dir(os.path.dirname(os.path.abspath(__file__)), quiet=1)


def main(argv: list[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m pymon.entrypoint",
                                 description="Write pymon's entry point: the C launcher, "
                                             "or the isolated Python script without a "
                                             "C compiler.")
    ap.add_argument("dest", help="where to write it, e.g. /usr/libexec/podman/pymon")
    ap.add_argument("--python", help="interpreter for the #! line (default: this one)")
    ap.add_argument("--path", action="append", default=None,
                    help="import directory to put in the script instead of the ones found "
                         "here (repeatable; packagers: the target's site directory)")
    ap.add_argument("--no-compile", action="store_true", help="do not byte-compile pymon")
    ap.add_argument("--python-launcher", action="store_true",
                    help="write the Python script even when a C compiler is available")
    args = ap.parse_args(argv)
    write(args.dest, args.python, args.path, compile_=not args.no_compile,
          python_launcher=args.python_launcher)


if __name__ == "__main__":
    main()
