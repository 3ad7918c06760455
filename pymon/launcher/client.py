"""The warm path of the launcher: hand this process's invocation to `pymon-server`.

The server forks a monitor that takes over argv, environment, cwd, umask, rlimits, signal
state and the fds at their numbers (pymon/handover.py has the conversation). Until the
server has taken our token, any problem (no socket, refused, a stale socket file, a
version mismatch, no taker within the budget) means the cold path: `serve` returns the
reason. Once it has, we are committed and only relay the outcome: write the conmon pidfile
and exit 0, or, with --sync, wait for the monitor's status while forwarding signals; a
refusal that still comes (the server checks the request after it took the token, and a
fork can fail) means no monitor exists, and the cold path again.

Import-light like the cold path (`_socket`, `_signal`, `array`): it runs before it.
"""

from __future__ import annotations

import _signal as signal
import _socket
import array
import os
import time

from pymon import handover
from pymon.cli import VERSION
from pymon.exitfile import write_atomic

# How long the server may take to take the token (from connect). A slower server costs
# more than it saves: the cold path then runs instead. Tests on a loaded machine raise it.
BUDGET_MS = 2.0
# Signals a --sync launcher passes on to its monitor, as if they had been sent to it.
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGUSR1,
             signal.SIGUSR2, signal.SIGALRM, signal.SIGWINCH, signal.SIGCONT)


class Committed(Exception):
    """Raised inside `serve` once the server took the token: the launcher's exit status
    is `status`."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def _signal_masks() -> tuple[int, int]:
    blocked = ignored = 0
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"SigBlk:"):
                    blocked = int(line[7:], 16)
                elif line.startswith(b"SigIgn:"):
                    ignored = int(line[7:], 16)
    except (OSError, ValueError):
        pass
    return blocked, ignored


def _oom_score_adj() -> int:
    try:
        with open("/proc/self/oom_score_adj", "rb") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 0


def _rlimits() -> list[tuple[int, int, int]]:
    import resource

    out = []
    for r in range(handover.RLIMIT_COUNT):
        soft, hard = resource.getrlimit(r)
        out.append((r, -1 if soft == resource.RLIM_INFINITY else soft,
                    -1 if hard == resource.RLIM_INFINITY else hard))
    return out


def request(argv: list[str], fds: tuple[int, ...]) -> bytes:
    blocked, ignored = _signal_masks()
    mask = os.umask(0o022)
    os.umask(mask)
    return handover.encode_request(
        VERSION, os.getpid(), [os.fsencode(a) for a in argv],
        [os.fsencode(k) + b"=" + os.fsencode(v) for k, v in os.environ.items()],
        os.fsencode(os.getcwd()), mask, list(fds), _rlimits(), _oom_score_adj(), blocked,
        ignored, os.getpriority(os.PRIO_PROCESS, 0))


def serve(argv: list[str], fds: tuple[int, ...]) -> str:
    """Try the warm path. Returns why it was not taken; raises Committed once it was."""
    path = handover.default_socket_path(os.environ, os.geteuid())
    if path is None:
        return "no server socket configured"
    try:
        budget = float(os.environ.get("PYMON_SERVER_BUDGET_MS", BUDGET_MS)) / 1000
    except ValueError:
        budget = BUDGET_MS / 1000
    if len(fds) > handover.MAX_FDS:
        return f"{len(fds)} fds to pass, more than {handover.MAX_FDS}"
    sock = _socket.socket(_socket.AF_UNIX,
                          _socket.SOCK_SEQPACKET | _socket.SOCK_CLOEXEC | _socket.SOCK_NONBLOCK)
    try:
        deadline = time.monotonic() + budget
        try:
            sock.connect(path)
        except OSError as e:
            return f"{path}: {e.strerror or e}"
        try:
            data = request(argv, fds)
        except OSError as e:
            return f"cannot describe this process: {e.strerror or e}"
        if len(data) > handover.MAX_REQUEST:
            return f"request of {len(data)} bytes is over {handover.MAX_REQUEST}"
        token, token_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            os.write(token_w, handover.TOKEN)
            os.close(token_w)
            try:
                sock.sendmsg([data], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS,
                                       array.array("i", (*fds, token)).tobytes())])
            except OSError as e:
                return f"sending the request: {e.strerror or e}"
            reply = _receive(sock, deadline)  # a refusal: _follow returns its reason
            # Ours if still there: the server forks nothing. Empty (EOF: the write end is
            # closed): the server took it, and a monitor is coming.
            if reply is None and os.read(token, 1) == handover.TOKEN:
                return f"no answer within {budget * 1000:g} ms"
            outcome = _follow(sock, reply)
            if isinstance(outcome, str):
                return outcome
            raise Committed(outcome)
        finally:
            os.close(token)
    finally:
        sock.close()


def _receive(sock: _socket.socket, deadline: float | None) -> tuple[str, int, str] | None:
    """One reply; None on timeout, EOF or a malformed reply."""
    import select

    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    while True:
        if deadline is None:
            timeout = -1
        else:
            timeout = int(max(0.0, deadline - time.monotonic()) * 1000 + 0.999)
        if not poller.poll(timeout):
            if deadline is not None and time.monotonic() >= deadline:
                return None
            continue
        try:
            data = sock.recv(handover.MAX_REPLY)
        except BlockingIOError:
            continue
        except OSError:
            return None
        if not data:
            return None
        try:
            return handover.decode_reply(data)
        except (ValueError, UnicodeDecodeError):
            return None


def _follow(sock: _socket.socket, first: tuple[str, int, str] | None) -> int | str:
    """Once the server took the token: relay what the monitor says (starting with `first`,
    if it came already); returns the launcher's exit status, or, if the server refuses
    after all (a check or its fork failed: no monitor exists), the reason, for the cold
    path."""
    forwarding = False
    pid = 0
    reply = first
    while True:
        if reply is None:
            reply = _receive(sock, None)
        if reply is None:
            who = f"monitor {pid}" if pid > 0 else "the monitor"
            if forwarding:
                _error(f"{who} ended without reporting an exit status")
            else:
                _error(f"{who} ended before it took over")
            return 1
        kind, value, text = reply
        reply = None
        if kind == handover.REFUSED and not forwarding:
            return f"refused: {text}"
        if kind == handover.DETACHED:
            if value <= 0:
                _error(f"bad monitor pid {value}")
                return 1
            if text:
                try:
                    write_atomic(text, str(value))
                except OSError as e:
                    try:
                        os.kill(value, signal.SIGKILL)  # leave nothing behind, as P0 does
                    except OSError:
                        pass
                    _error(f"Failed to write conmon pidfile: {e.strerror}")
                    return 1
            return 0
        if kind == handover.RUNNING:
            if value <= 0:  # kill(0) or kill(-1) would hit our group or everyone
                _error(f"bad monitor pid {value}")
                return 1
            def forward(sig: int, _frame: object, monitor: int = value) -> None:
                _forward(monitor, sig)

            for sig in FORWARDED:
                signal.signal(sig, forward)
            forwarding = True
            pid = value
            continue
        if kind == handover.EXITED:
            return value & 0xFF
        _error(f"unexpected message {kind!r} from monitor {pid}")
        return 1


def _forward(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except OSError:
        pass


def _error(text: str) -> None:
    try:
        os.write(2, f"[conmon:e]: {text}\n".encode())
    except OSError:
        pass
