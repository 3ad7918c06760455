"""Fake OCI runtimes: short Python scripts for faults a real runtime can't easily produce.

Every script logs its argv to `<script>.argv` (one JSON list per call) and finds the
`--pid-file` argument like a real runtime would."""

from __future__ import annotations

import sys
from pathlib import Path

PRELUDE = f"""#!{sys.executable} -I
import json, os, sys, time
argv = sys.argv[1:]
with open(__file__ + ".argv", "a") as f:
    f.write(json.dumps(argv) + "\\n")
pid_file = argv[argv.index("--pid-file") + 1] if "--pid-file" in argv else None
with open(__file__ + ".pid", "w") as f:
    f.write(str(os.getpid()))
"""

# The "container": a child that outlives the runtime and is re-parented to the monitor.
SPAWN_CONTAINER = """
def spawn_container(code):
    pid = os.fork()
    if pid == 0:
        os.setsid()
        # like runc: the container waits for `start`; here a short pause is enough
        time.sleep(0.2)
        os._exit(code)
    return pid
"""

BEHAVIOURS = {
    "fail": 'sys.stderr.write("fake create failed: no such file or directory\\n"); sys.exit(1)',
    "fail-silent": "sys.exit(1)",
    "hang": "time.sleep(3600)",
    "no-pidfile": 'sys.stderr.write("no pid for you\\n"); sys.exit(0)',
    "no-pidfile-silent": "sys.exit(0)",
    "garbage-pidfile": 'open(pid_file, "w").write("not a pid"); sys.exit(0)',
    "ok-exit-5": SPAWN_CONTAINER + 'open(pid_file, "w").write(str(spawn_container(5))); sys.exit(0)',
    "long-message": 'sys.stderr.write("x" * 20000); sys.exit(1)',
    # a "container" that is not the monitor's child: a process the test started
    "foreign-pid": 'open(pid_file, "w").write(os.environ["FOREIGN_PID"]); sys.exit(0)',
    # what R was given, in <script>.seen (JSON), then a failed create
    "record": """
seen = {"pid": os.getpid(), "listen_pid": os.environ.get("LISTEN_PID"),
        "modes": [os.stat(f"/proc/self/fd/{fd}").st_mode & 0o777 for fd in (1, 2)],
        "status": open("/proc/self/status").read()}
with open(__file__ + ".tmp", "w") as f:
    f.write(json.dumps(seen))
os.rename(__file__ + ".tmp", __file__ + ".seen")
sys.stderr.write("recorded\\n")
sys.exit(1)
""",
}


def fake_runtime(directory: Path, behaviour: str) -> Path:
    path = directory / f"fake-runtime-{behaviour}"
    path.write_text(PRELUDE + BEHAVIOURS[behaviour] + "\n")
    path.chmod(0o755)
    return path


def calls(runtime: Path) -> list[list[str]]:
    import json

    argv_log = Path(str(runtime) + ".argv")
    if not argv_log.exists():
        return []
    return [json.loads(line) for line in argv_log.read_text().splitlines()]


def runtime_pid(runtime: Path) -> int:
    return int(Path(str(runtime) + ".pid").read_text())
