"""Compiles the C launcher (pymon_launch.c) at install time.

The launcher's cold path (an interpreter, the bootstrap program, pymon's version) is
compiled in as C string literals, so the binary needs nothing at run time: no config
file to read, no PATH lookup. It must be rebuilt when the interpreter or the import
directories move, as the entry point script must be rewritten.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import sysconfig

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pymon_launch.c")
CFLAGS = ("-std=gnu11", "-O2", "-Wall", "-Wextra")
# Linked statically where the C library's static archive is installed (libc6-dev has it):
# the launcher is exec'd for every container and exec probe, and the dynamic loader's
# work (mapping libc, relocating, ~25 page faults) was ~0.1-0.2 ms of each exec's CPU on
# the VMs we measure on. Still a PIE, as the distributions' hardening wants. Where it
# cannot link so, the launcher is linked as usual.
STATIC = ("-static-pie",)


def c_string(text: str) -> str:
    """A C string literal for `text` (as UTF-8): printable ASCII as is, everything else
    as octal escapes, so no byte of a path or program can end or bend the literal."""
    out = []
    for byte in text.encode():
        char = chr(byte)
        if char in '"\\?' or not 0x20 <= byte < 0x7F:
            out.append(f"\\{byte:03o}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def compiler() -> list[str] | None:
    """The C compiler Python was built with (sysconfig's CC), else `cc`; None if neither
    is installed."""
    for candidate in (sysconfig.get_config_var("CC") or "", "cc"):
        words = shlex.split(candidate)
        if words and shutil.which(words[0]):
            return words
    return None


def build(dest: str, python: str, roots: list[str], *, defines: dict[str, str] | None = None,
          extra_flags: tuple[str, ...] = (), installed_as: str | None = None) -> bool:
    """Compile the launcher to `dest` (atomically, mode 0755) with `python` and `roots`
    for its cold path. False, with the reason on stderr, when there is no compiler or the
    compilation fails. CPPFLAGS, CFLAGS and LDFLAGS from the environment come after ours,
    so a distribution's build flags (hardening, its own -O) apply and win. `installed_as`
    is the path the launcher will have where it runs (default: `dest`), for a package
    built in a staging directory; the cold monitor's command line names it. `defines` (raw
    C tokens) and `extra_flags` are for tests."""
    from pymon.cli import VERSION
    from pymon.launcher.program import bootstrap

    cc = compiler()
    if cc is None:
        print("pymon: no C compiler found (sysconfig CC or cc)", file=sys.stderr)
        return False
    program = bootstrap(roots, installed_as or os.path.abspath(dest))
    macros = {"PYTHON": c_string(python), "BOOTSTRAP": c_string(program),
              "PYMON_VERSION": c_string(VERSION), **(defines or {})}
    tmp = f"{dest}.{os.getpid()}.tmp"
    env_flags = [flag for name in ("CPPFLAGS", "CFLAGS", "LDFLAGS")
                 for flag in shlex.split(os.environ.get(name, ""))]
    cmd = [*cc, *CFLAGS, *env_flags, *extra_flags,
           *(f"-D{k}={v}" for k, v in macros.items()), "-o", tmp, SOURCE]
    try:
        done = subprocess.run([*cmd, *STATIC], stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, check=False)
        if done.returncode != 0:  # no static C library here: the usual link
            done = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True,
                                  text=True, check=False)
    except OSError as e:
        print(f"pymon: cannot run {cc[0]}: {e}", file=sys.stderr)
        return False
    if done.returncode != 0:
        print(f"pymon: compiling the C launcher failed:\n{done.stderr}", file=sys.stderr)
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        return False
    if done.stderr:  # warnings: shown, not fatal
        sys.stderr.write(done.stderr)
    os.chmod(tmp, 0o755)
    os.rename(tmp, dest)
    return True
