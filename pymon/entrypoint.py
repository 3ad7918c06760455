"""Writes pymon's production entry point: the C launcher, or a script that runs Python
isolated and fast.

    python -m pymon.entrypoint /usr/libexec/podman/pymon

With a C compiler, the entry point is the compiled launcher (pymon/launcher/pymon_launch.c):
it hands the invocation to a warm `pymon-server` in well under a millisecond and otherwise
execs the interpreter with the same program the script below holds
(`pymon.launcher.program`). Without one, or with --python-launcher, it is the script.

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

from pymon.launcher.program import program

MODULES = ("pymon", "trio", "msgspec", "cffi", "_cffi_backend", "sniffio",
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
            + "".join(line + "\n" for line in program(roots)))


def write(dest: str, python: str | None = None, roots: list[str] | None = None,
          compile_: bool = True, python_launcher: bool = False,
          installed_as: str | None = None) -> None:
    python = python or sys.executable
    roots = import_roots() if roots is None else roots
    built = False
    if not python_launcher:
        from pymon.launcher.build import build

        built = build(dest, python, roots, installed_as=installed_as)
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
    ap.add_argument("--installed-as", metavar="PATH",
                    help="the path the entry point will have where it runs, when DEST is in "
                         "a package's staging directory (default: DEST); a cold monitor's "
                         "command line names it, for ps and pgrep -f")
    args = ap.parse_args(argv)
    write(args.dest, args.python, args.path, compile_=not args.no_compile,
          python_launcher=args.python_launcher, installed_as=args.installed_as)


if __name__ == "__main__":
    main()
