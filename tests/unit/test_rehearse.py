"""A spare's rehearsal (pymon/server/twin.py) runs the set-up's Python on the process's own
values: nothing a monitor mirrors from its launcher may differ afterwards (no root). Run
as a spare runs it: after leave_server, which drops the server's signal handlers."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(60)

PROGRAM = r"""
import json, os, resource, signal, sys
from pymon.server import twin

def state():
    status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
    umask = os.umask(0); os.umask(umask)
    return {
        "env": dict(os.environ), "cwd": os.getcwd(), "umask": umask,
        "rlimits": [resource.getrlimit(r) for r in range(16)],
        "nice": os.getpriority(os.PRIO_PROCESS, 0),
        "oom": open("/proc/self/oom_score_adj").read(),
        "comm": open("/proc/self/comm").read(),
        "signals": [status[k].strip() for k in ("SigBlk", "SigIgn", "SigCgt")],
        "handlers": [repr(signal.getsignal(s)) for s in range(1, signal.NSIG)
                     if s not in (32, 33)],
    }

os.chdir(sys.argv[1])
os.umask(0o027)
signal.signal(signal.SIGTTOU, signal.SIG_IGN)
signal.signal(signal.SIGUSR2, lambda *_: None)
twin.note_signals()
twin.leave_server(keep=())  # as a spare does first: the server's handlers go
before = state()
twin.rehearse(twin.sample_request())
print(json.dumps([before, state()]))
"""


def test_rehearsal_changes_nothing_it_mirrors(tmp_path) -> None:  # type: ignore[no-untyped-def]
    done = subprocess.run([sys.executable, "-c", PROGRAM, str(tmp_path)], capture_output=True,
                          text=True, timeout=30,
                          env={"PATH": "/usr/bin:/bin", "TZ": "UTC", "A": "b=c", "EMPTY": ""})
    assert done.returncode == 0, done.stderr
    before, after = json.loads(done.stdout)
    assert before["umask"] == 0o027 and before["cwd"] == str(tmp_path)
    for key in before:
        assert after[key] == before[key], key
