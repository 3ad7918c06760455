"""What M's set-up hands to the container's life (monitor/life.py, monitor/probe.py, and the
SIGUSR1 report): one frozen value, so that the life imports its input type and not the
set-up that made it."""

from __future__ import annotations

from pymon.cli import Frozen

TYPE_CHECKING = False  # annotations only (PEP 563): these are not imported at run time
if TYPE_CHECKING:
    from pymon import sockets
    from pymon.config import Config
    from pymon.ctl import Control, EarlyServer
    from pymon.monitor.lifeline import Lifeline
    from pymon.oom import OomWatcher


class Launched(Frozen):
    """What the launch path hands to the monitor. All fds are M's and CLOEXEC."""

    __slots__ = ("config", "container_pid", "runtime_pid", "stdout_fd", "stderr_fd",
                 "stdin_fd", "log_fd", "sync_fd", "inherited_fds", "oom_score_adj",
                 "ctl_fds", "winsz_fds", "attach", "tty_master", "control", "notify_fd",
                 "oom", "pid_sent_at", "early_ctl", "lifeline")
    config: Config
    container_pid: int
    runtime_pid: int
    stdout_fd: int | None
    stderr_fd: int | None
    stdin_fd: int | None
    log_fd: int | None
    sync_fd: int | None
    inherited_fds: tuple[int, ...]
    oom_score_adj: bytes | None
    ctl_fds: tuple[int, int] | None
    winsz_fds: tuple[int, int] | None
    attach: sockets.AttachListener | None
    tty_master: int | None  # terminal mode: the pty master, also `stdin_fd`
    control: Control  # what ctl/winsz lines do, and their pending partial lines
    notify_fd: int | None  # the container side of the sd-notify proxy
    oom: OomWatcher
    pid_sent_at: float  # time.monotonic() when the pid message went out
    early_ctl: EarlyServer | None  # serves ctl until the monitor's tasks take over
    lifeline: Lifeline | None  # warm monitors: what the server needs to rescue us

    def __init__(self, **values: object) -> None:
        self._init(values)
