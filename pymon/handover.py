"""The hand-over between a launcher and the monitor: the one value that describes an
invocation, and the wire format a launcher uses to pass it to `pymon-server`.

Both sides import this module: the launchers (the cold path in this interpreter, the warm
client, the C launcher that follows the same format) and the server and its forked
monitors. It stays import-light (no msgspec, no typing at run time) because the cold path
and the Python launcher run it before anything else: msgspec's import alone costs ~16 ms,
so the launcher encodes its request with the few lines of MessagePack below, and only the
server decodes it with msgspec into a validated struct (pymon/server/wire.py).

The conversation on one SOCK_SEQPACKET connection (one message per packet):

    launcher -> server   REQUEST with SCM_RIGHTS: the launcher's fds, in REQUEST.fds order,
                         then the read end of its token pipe
    server   -> launcher ["refused", 0, reason]          no monitor: the launcher runs cold
    monitor  -> launcher ["detached", pid, ""]           not --sync: write the conmon
                                                          pidfile and exit 0
                         ["running", pid, ""]            --sync: wait for "exited"
                         ["exited", status, ""]          the launcher exits with status

Who owns the invocation is decided by the token, not by a message: the launcher writes one
byte (TOKEN) into a pipe of its own and sends the read end with the request. The server
reads it, non-blocking, as soon as the message is whole (before its checks of the peer and
the request, which a slow host could push past the budget), and forks the monitor only if
it got the byte and the checks pass; the monitor then starts at once. The launcher, if no message has come
when its 2 ms budget runs out, reads the byte itself: if it gets it, it runs cold, and the
server, reading nothing, forks nothing; if the byte is gone, the server took it, and the
launcher is committed and waits for the monitor. One read of one byte: exactly one side
wins, and nobody waits for the other, so the monitor's start costs no round trip (an
answer and a GO took one before, a wake-up each way; ~5 ms on this VM in a slow hour).
"refused" always means that no monitor exists, so the launcher runs cold even when it
comes after the server took the token (a check or a fork that failed). The monitor's pid comes with
"detached" or "running"; a connection that closes before either, once the launcher is
committed, ends it with an error (exit 1), as conmon's does when its child dies.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

PROTOCOL = 2
# SCM_RIGHTS carries at most 253 fds per message (SCM_MAX_FD); more is refused and the
# launcher runs cold, where any number of preserved fds works.
MAX_FDS = 250
# One request, argv and environment included. SOCK_SEQPACKET messages are bounded by the
# socket's send buffer (212992 bytes by default); a larger one is refused: cold path.
MAX_REQUEST = 200_000
MAX_REPLY = 4096
# Linux's resource limits are numbered 0..15 (RLIMIT_NLIMITS); Python does not export it.
RLIMIT_COUNT = 16
TOKEN = b"t"

REFUSED = "refused"
DETACHED = "detached"
RUNNING = "running"
EXITED = "exited"


def default_socket_path(env: Mapping[str, str], euid: int) -> str | None:
    """Where the server listens: PYMON_SOCKET if set (empty: no server, always cold),
    /run/pymon/server.sock for root, $XDG_RUNTIME_DIR/pymon/server.sock for others."""
    path = env.get("PYMON_SOCKET")
    if path is not None:
        return path or None
    if euid == 0:
        return "/run/pymon/server.sock"
    runtime_dir = env.get("XDG_RUNTIME_DIR")
    if not runtime_dir:
        return None
    return os.path.join(runtime_dir, "pymon", "server.sock")


class Invocation:
    """Everything a monitor's preparation reads of the process that podman executed:
    argv (without argv[0]), environment, cwd, umask and the fds >= 3 it inherited.
    The cold path builds it from this process; a forked monitor from the request, after
    it has installed the launcher's fds at their numbers."""

    __slots__ = ("args", "env", "cwd", "umask", "fds")
    args: tuple[str, ...]
    env: dict[str, str]
    cwd: str | None  # None: the cwd could not be read (conmon fails on it)
    umask: int
    fds: tuple[int, ...]

    def __init__(self, args: tuple[str, ...], env: dict[str, str], cwd: str | None,
                 umask: int, fds: tuple[int, ...]) -> None:
        for name, value in (("args", args), ("env", env), ("cwd", cwd), ("umask", umask),
                            ("fds", fds)):
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen")

    def __repr__(self) -> str:
        return (f"Invocation(args={self.args!r}, cwd={self.cwd!r}, umask={self.umask:o}, "
                f"fds={self.fds!r})")

    @classmethod
    def of_this_process(cls, args: list[str], fds: tuple[int, ...]) -> Invocation:
        try:
            cwd: str | None = os.getcwd()
        except OSError:
            cwd = None
        mask = os.umask(0o022)
        os.umask(mask)
        return cls(tuple(args), dict(os.environ), cwd, mask, fds)


def open_fds(minimum: int = 3) -> tuple[int, ...]:
    """The open fds >= `minimum`, sorted: taken at start-up, before this process opens
    anything of its own, they are what the engine passed."""
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return ()
    fds = []
    for name in names:
        fd = int(name)
        if fd < minimum:
            continue
        try:
            os.get_inheritable(fd)  # the fd listdir itself used is closed by now
        except OSError:
            continue
        fds.append(fd)
    return tuple(sorted(fds))


# --- MessagePack, the subset the launcher writes and reads --------------------------------


def _int(n: int) -> bytes:
    if 0 <= n < 0x80:
        return bytes((n,))
    if -32 <= n < 0:
        return bytes((n & 0xFF,))
    return b"\xd3" + n.to_bytes(8, "big", signed=True)


def _bin(data: bytes) -> bytes:
    return b"\xc6" + len(data).to_bytes(4, "big") + data


def _str(text: str) -> bytes:
    data = text.encode()
    return b"\xdb" + len(data).to_bytes(4, "big") + data


def _array(items: list[bytes]) -> bytes:
    return b"\xdd" + len(items).to_bytes(4, "big") + b"".join(items)


def encode_request(version: str, pid: int, argv: list[bytes], env: list[bytes], cwd: bytes,
                   umask: int, fds: list[int], rlimits: list[tuple[int, int, int]],
                   oom_score_adj: int, sig_blocked: int, sig_ignored: int, nice: int) -> bytes:
    """The request, a MessagePack array in the field order of server/wire.py's Request.
    Limits are -1 for RLIM_INFINITY; signal sets are 64-bit masks (bit n-1 for signal n),
    sent as signed 64-bit integers (MessagePack has no wider type the server accepts)."""
    return _array([
        _int(PROTOCOL), _str(version), _int(pid),
        _array([_bin(a) for a in argv]), _array([_bin(e) for e in env]), _bin(cwd),
        _int(umask), _array([_int(fd) for fd in fds]),
        _array([_array([_int(r), _int(s), _int(h)]) for r, s, h in rlimits]),
        _int(oom_score_adj), _int(_signed64(sig_blocked)), _int(_signed64(sig_ignored)),
        _int(nice)])


def _signed64(mask: int) -> int:
    mask &= (1 << 64) - 1
    return mask - (1 << 64) if mask >> 63 else mask


def encode_reply(kind: str, value: int = 0, text: str = "") -> bytes:
    return _array([_str(kind), _int(value), _str(text[:MAX_REPLY // 2])])


def decode_reply(data: bytes) -> tuple[str, int, str]:
    """A reply as (kind, value, text). Raises ValueError on anything malformed."""
    pos = 0

    def take(n: int) -> bytes:
        nonlocal pos
        if pos + n > len(data):
            raise ValueError("truncated reply")
        chunk = data[pos:pos + n]
        pos += n
        return chunk

    def length(marker: int, fix_base: int, fix_size: int, sizes: dict[int, int]) -> int:
        if fix_base <= marker < fix_base + fix_size:
            return marker - fix_base
        if marker in sizes:
            return int.from_bytes(take(sizes[marker]), "big")
        raise ValueError(f"unexpected marker {marker:#x}")

    if length(take(1)[0], 0x90, 16, {0xDC: 2, 0xDD: 4}) != 3:
        raise ValueError("a reply has three fields")
    kind = take(length(take(1)[0], 0xA0, 32, {0xD9: 1, 0xDA: 2, 0xDB: 4})).decode()
    marker = take(1)[0]
    if marker < 0x80:
        value = marker
    elif marker >= 0xE0:
        value = marker - 0x100
    elif marker in (0xD0, 0xD1, 0xD2, 0xD3):
        value = int.from_bytes(take(1 << (marker - 0xD0)), "big", signed=True)
    elif marker in (0xCC, 0xCD, 0xCE, 0xCF):
        value = int.from_bytes(take(1 << (marker - 0xCC)), "big")
    else:
        raise ValueError(f"unexpected marker {marker:#x}")
    text = take(length(take(1)[0], 0xA0, 32, {0xD9: 1, 0xDA: 2, 0xDB: 4})).decode(
        errors="replace")
    if pos != len(data):
        raise ValueError("trailing bytes in reply")
    return kind, value, text
