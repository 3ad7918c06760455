"""Compiles the C launcher (pymon_launch.c) at install time.

The launcher's cold path (an interpreter, the bootstrap program, pymon's version) is
compiled in as C string literals, so the binary needs nothing at run time: no config
file to read, no PATH lookup. It must be rebuilt when the interpreter or the import
directories move, as the entry point script must be rewritten.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import struct
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
# Against musl first, where its compiler wrapper is installed (Debian: musl-tools). glibc's
# start-up, static or dynamic, asks the CPU for its features and cache sizes: tens of CPUID
# instructions, and in a virtual machine each one traps to the hypervisor (6.9 us each on
# our nested VM). That was ~0.45 of the launcher's ~0.8 ms of CPU per ExecSync probe
# (bench/execsync.py); musl's start-up asks nothing. The launcher needs nothing glibc has
# and musl lacks: system calls and a few string functions.
MUSL = "musl-gcc"


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


def musl_static_pie() -> tuple[str, ...] | None:
    """musl-gcc's flags for a static PIE, or None without musl. The wrapper's specs
    (musl's own, Debian's) know no -static-pie: given it, they link musl's libc.so
    dynamically. So the link is spelled out: position-independent, static, no dynamic
    loader, and musl's self-relocating start file, rcrt1.o, which sits beside the specs
    file that the wrapper (a shell script) names."""
    wrapper = shutil.which(MUSL)
    if wrapper is None:
        return None
    try:
        with open(wrapper, encoding="utf-8") as f:
            script = f.read(4096)
    except (OSError, UnicodeDecodeError):
        return None
    specs = re.search(r'-specs\s+"?([^"\s]+)', script)
    if specs is None:
        return None
    start = os.path.join(os.path.dirname(specs.group(1)), "rcrt1.o")
    if not os.path.isfile(start):
        return None
    return ("-fPIE", "-pie", "-Wl,-static", "-Wl,--no-dynamic-linker", "-Wl,-z,text",
            "-nostartfiles", start)


def dynamic(elf: bytes) -> bool:
    """Whether an ELF file (its bytes) names a dynamic loader (a PT_INTERP header)."""
    phoff, = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    return any(struct.unpack_from("<I", elf, phoff + i * phentsize)[0] == 3  # PT_INTERP
               for i in range(phnum))


def _dynamic_file(path: str) -> bool:
    with open(path, "rb") as f:
        return dynamic(f.read(4096))  # the program headers follow the ELF header


def links() -> list[tuple[list[str], tuple[str, ...]]]:
    """The (compiler, link flags) to try, in order: static against musl, static against
    the C library, then as usual. Empty without a compiler."""
    cc = compiler()
    if cc is None:
        return []
    musl_flags = musl_static_pie()
    musl = [([MUSL], musl_flags)] if musl_flags else []
    return [*musl, (cc, STATIC), (cc, ())]


def build(dest: str, python: str, roots: list[str], *, defines: dict[str, str] | None = None,
          extra_flags: tuple[str, ...] = (), installed_as: str | None = None) -> bool:
    """Compile the launcher to `dest` (atomically, mode 0755) with `python` and `roots`
    for its cold path, with the first of links() that links. False, with the reason on
    stderr, when there is no compiler or the compilation fails. CPPFLAGS, CFLAGS and
    LDFLAGS from the environment come after ours, so a distribution's build flags
    (hardening, its own -O) apply and win. `installed_as` is the path the launcher will
    have where it runs (default: `dest`), for a package built in a staging directory; the
    cold monitor's command line names it. `defines` (raw C tokens) and `extra_flags` are
    for tests."""
    from pymon.cli import VERSION
    from pymon.launcher.program import bootstrap

    tries = links()
    if not tries:
        print("pymon: no C compiler found (sysconfig CC or cc)", file=sys.stderr)
        return False
    program = bootstrap(roots, installed_as or os.path.abspath(dest))
    macros = {"PYTHON": c_string(python), "BOOTSTRAP": c_string(program),
              "PYMON_VERSION": c_string(VERSION), **(defines or {})}
    tmp = f"{dest}.{os.getpid()}.tmp"
    env_flags = [flag for name in ("CPPFLAGS", "CFLAGS", "LDFLAGS")
                 for flag in shlex.split(os.environ.get(name, ""))]
    failure = ""
    for cc, link in tries:  # the first that links; the last one's failure is reported
        cmd = [*cc, *CFLAGS, *env_flags, *extra_flags,
               *(f"-D{k}={v}" for k, v in macros.items()), "-o", tmp, SOURCE, *link]
        try:
            done = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True,
                                  text=True, check=False)
        except OSError as e:
            failure = f"cannot run {cc[0]}: {e}"
            continue
        if done.returncode == 0 and not (link and _dynamic_file(tmp)):
            break
        failure = (f"compiling the C launcher failed:\n{done.stderr}" if done.returncode
                   else f"{cc[0]} {' '.join(link)} linked dynamically")
    else:
        print(f"pymon: {failure}", file=sys.stderr)
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
