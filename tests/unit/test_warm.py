"""The server's warm-up imports every pymon module a warm monitor can import, so that no
monitor runs the import machinery after the fork (each would copy the pages it writes)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# What warm.import_all() leaves loaded, in a fresh interpreter (this one has loaded more)
_LOADED = """
import sys
from pymon.server.warm import import_all
import_all()
print("\\n".join(sorted(m for m in sys.modules if m == "pymon" or m.startswith("pymon."))))
"""


def _is_module(name: str) -> bool:
    path = ROOT / name.replace(".", "/")
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def _type_checking_only(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) \
                and node.test.id == "TYPE_CHECKING":
            return True
    return False


def _pymon_imports(source: str) -> list[tuple[int, str]]:
    """Every pymon module `source` imports, at any depth (in functions too), except under
    `if TYPE_CHECKING:`."""
    tree = ast.parse(source)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                and node.module.split(".")[0] == "pymon":
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.split(".")[0] == "pymon"]
        else:
            continue
        if not _type_checking_only(node, parents):
            found += [(node.lineno, n) for n in names if _is_module(n)]
    return found


def test_a_warm_monitor_imports_no_pymon_module_after_the_fork() -> None:
    out = subprocess.run([sys.executable, "-c", _LOADED], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    loaded = set(out.split())
    assert "pymon.monitor.life" in loaded and "pymon.server.twin" in loaded
    missing = []
    for name in sorted(loaded):
        path = ROOT / name.replace(".", "/")
        path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        if not path.exists():
            continue  # the compiled _native module
        missing += [f"{name}:{line} imports {target}"
                    for line, target in _pymon_imports(path.read_text())
                    if target not in loaded]
    assert not missing, "not imported by pymon/server/warm.py import_all(): " + \
        "; ".join(missing)


# After the warm-up and settling, in a fresh interpreter: which of the relay's hot
# functions run quickened (specialized, shared) rather than settled (unspecialized)
_HOT = """
import ctypes, sys
from pymon.server.warm import warm
from pymon import attach, logformat, logs, stdio
import trio
assert warm() > 1000
hot = [stdio.Relay.read_available, stdio.pump, logs.Sinks.write, logs.K8sFileLog.write,
       logs.K8sFileLog._writev, logformat.frame, logformat.timestamp,
       attach.AttachServer.broadcast, trio.lowlevel.wait_readable]
for f in hot:
    code = getattr(f, "__wrapped__", f).__code__
    raw = ctypes.string_at(id(code), sys.getsizeof(code))
    print(f.__qualname__, code.co_code not in raw)
"""


@pytest.mark.skipif(sys.version_info[:2] != (3, 11), reason="settling is CPython 3.11's")
def test_the_relays_hot_path_is_warmed_before_the_rest_is_settled() -> None:
    out = subprocess.run([sys.executable, "-c", _HOT], cwd=ROOT, check=True, timeout=60,
                         capture_output=True, text=True).stdout
    cold = [line.split()[0] for line in out.splitlines() if line.split()[1] != "True"]
    assert len(out.splitlines()) == 9 and not cold, out
