"""pymon-server for bench/execsync.py, with one measuring hook.

    python bench/execsync_server.py FD [--trio] -- SERVER ARGS...

A warm ExecSync monitor is the server's child, not the bench's, and it has exited by the
time the bench could look at it. So the server's reaping is replaced here by one that,
for each exited monitor, reads the zombie's own CPU time (/proc/PID/schedstat: the
scheduler's nanoseconds, user+sys) before reaping it with wait4 (whose rusage adds what
the monitor itself reaped: the runtime and the probe), and writes "PID OWN_NS TOTAL_NS"
to FD. Nothing else of the server changes; the hook runs after the monitor has exited.

--trio: warm monitors run ExecSync under trio (monitor/life.py) instead of
monitor/probe.py, to compare the two.
"""

from __future__ import annotations

import os
import sys


def main() -> int:
    fd = int(sys.argv[1])
    rest = sys.argv[2:]
    trio_exec = "--trio" in rest[:rest.index("--")]
    server_args = rest[rest.index("--") + 1:]
    os.set_inheritable(fd, False)

    from pymon.server import serve

    def reap(self: serve.Server) -> None:
        while self.monitors:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                self.monitors.clear()
                return
            if info is None:
                return
            pid = info.si_pid
            try:
                with open(f"/proc/{pid}/schedstat") as f:
                    own = int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                own = -1
            _, status, ru = os.wait4(pid, 0)
            self._reaped(pid, status)
            total = round((ru.ru_utime + ru.ru_stime) * 1e9)
            os.write(fd, f"{pid} {own} {total}\n".encode())

    serve.Server._reap = reap  # type: ignore[method-assign]
    if trio_exec:
        from pymon.monitor import probe

        probe.eligible = lambda launched: False  # type: ignore[assignment]

    from pymon.server.__main__ import main as server_main

    return server_main(server_args)


if __name__ == "__main__":
    sys.exit(main())
