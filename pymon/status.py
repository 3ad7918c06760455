"""SIGUSR1: a one-line report of the monitor's state in its diagnostics.

An operator who wonders what a monitor is doing (`kill -USR1 PID`) gets the container's
pid, the bytes relayed per stream, the attach clients, the log file's size and what was
dropped, in syslog (with --syslog) and on stderr where stderr goes somewhere. Gathering
(`snapshot`) is apart from formatting (`format_state`, pure)."""

from __future__ import annotations

import signal

import trio

from pymon.cli import Frozen
from pymon.diag import log
from pymon.logs import K8sFileLog

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from pymon.attach import AttachServer
    from pymon.logs import Sinks
    from pymon.stdio import Relay


class State(Frozen):
    __slots__ = ("attach_clients", "attach_stalled", "dropped_bytes", "dropped_lines",
                 "given_back", "log_size", "pid", "relayed", "running")
    pid: int
    running: bool
    relayed: tuple[tuple[str, int], ...]  # (stream, bytes) per relayed stream
    attach_clients: int | None  # None: no attach socket
    attach_stalled: int  # clients disconnected for not reading
    log_size: int | None  # bytes in the current k8s-file log; None: no k8s-file
    dropped_lines: int  # log lines lost to failed writes
    dropped_bytes: int
    # (passes, pages given back in all, copies kept at the last pass): a warm monitor
    # giving back what it copied of the server's snapshot (monitor/givingback.py)
    given_back: tuple[int, int, int] | None

    def __init__(self, **values: object) -> None:
        self._init(values)


def format_state(s: State) -> str:
    parts = [f"state: container pid {s.pid} {'running' if s.running else 'exited'}"]
    parts.append("relayed " + (", ".join(f"{stream} {n} bytes" for stream, n in s.relayed)
                               or "nothing (no output streams)"))
    if s.attach_clients is None:
        parts.append("no attach socket")
    else:
        parts.append(f"{s.attach_clients} attach clients ({s.attach_stalled} dropped as stalled)")
    parts.append("no log file" if s.log_size is None else f"log file {s.log_size} bytes")
    parts.append(f"{s.dropped_lines} log lines ({s.dropped_bytes} bytes) dropped")
    if s.given_back is not None:
        passes, given, kept = s.given_back
        parts.append(f"{given} copied pages given back in {passes} passes ({kept} kept)")
    return "; ".join(parts)


def gather(pid: int, running: bool, relays: list[Relay], attach: AttachServer | None,
           sinks: Sinks, given_back: tuple[int, int, int] | None = None) -> State:
    """The state of a monitor's parts: a monitor's (monitor/life.py) or a replacement's
    (monitor/rescued.py)."""
    files = [s for s in sinks.sinks if isinstance(s, K8sFileLog)]
    return State(
        pid=pid, running=running,
        relayed=tuple((r.stream.decode(), r.relayed) for r in relays),
        attach_clients=None if attach is None else len(attach.clients),
        attach_stalled=0 if attach is None else attach.stalled,
        log_size=files[0].written if files else None,
        dropped_lines=sum(f.dropped_lines for f in files),
        dropped_bytes=sum(f.dropped_bytes for f in files), given_back=given_back)


async def report_on_sigusr1(state: Callable[[], State]) -> None:
    """While the container runs: each SIGUSR1 logs `state()` (trio restores SIG_IGN, set
    by signals.ignore_stray, when this ends)."""
    with trio.open_signal_receiver(signal.SIGUSR1) as signals:
        async for _ in signals:
            log.report("%s", format_state(state()))
