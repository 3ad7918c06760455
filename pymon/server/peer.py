"""Who may be served: the launcher must be the server's twin in everything a fork cannot
change. Same uid, gid and groups (SO_PEERCRED and /proc), same namespaces and root (a fork
inherits the server's), and nothing the monitor would have to raise above the server's own
limits without the capability to do it. Anyone else is refused and runs cold, which is
how rootless podman (another user namespace) keeps working next to a root server.
"""

from __future__ import annotations

import os
import resource

from pymon.handover import RLIMIT_COUNT
from pymon.server.wire import Rejected, Request

NAMESPACES = ("user", "mnt", "pid", "net", "ipc", "uts", "cgroup")
CAP_SYS_NICE = 23
CAP_SYS_RESOURCE = 24
_NS_PATHS = {ns: f"ns/{ns}" for ns in NAMESPACES}


def status_field(status: bytes, name: bytes) -> bytes:
    """One field of a /proc/PID/status text, b"" if it has none."""
    key = name + b":"
    if status.startswith(key):
        start = len(key)
    else:
        start = status.find(b"\n" + key)
        if start < 0:
            return b""
        start += len(key) + 1
    end = status.find(b"\n", start)
    return status[start:end if end >= 0 else len(status)].strip()


class Self:
    """The server's own identity and limits, read once at start."""

    def __init__(self) -> None:
        self.uid, self.gid = os.geteuid(), os.getegid()
        self.groups = frozenset(os.getgroups())
        self.namespaces = {ns: self._ident(f"/proc/self/ns/{ns}") for ns in NAMESPACES}
        self.root = self._ident("/proc/self/root")
        with open("/proc/self/status", "rb") as f:
            caps = int(status_field(f.read(), b"CapEff") or b"0", 16)
        self.can_raise_limits = bool(caps >> CAP_SYS_RESOURCE & 1)
        # Read once: a hard limit only goes down, and the server lowers none of its own
        self.hard_limits = tuple(resource.getrlimit(r)[1] for r in range(RLIMIT_COUNT))
        self.can_renice = bool(caps >> CAP_SYS_NICE & 1)
        with open("/proc/self/oom_score_adj", "rb") as f:
            self.oom_score_adj = int(f.read())
        self.nice = os.getpriority(os.PRIO_PROCESS, 0)

    @staticmethod
    def _ident(path: str, dir_fd: int | None = None) -> tuple[int, int] | None:
        try:
            st = os.stat(path, dir_fd=dir_fd)
        except OSError:
            return None
        return st.st_dev, st.st_ino

    def check_peer(self, pid: int, uid: int, gid: int) -> None:
        """Raises Rejected unless the connecting process may be served."""
        if uid != self.uid:
            raise Rejected(f"peer uid {uid} is not the server's ({self.uid})")
        if gid != self.gid:
            raise Rejected(f"peer gid {gid} is not the server's ({self.gid})")
        if pid <= 0:
            raise Rejected("peer pid unknown (another pid namespace)")
        try:
            # Every look below goes through one fd of the peer's /proc directory: the
            # same process each time, and no path to build per namespace (this runs on
            # every launch, in the process whose pages the monitors share)
            proc = os.open(f"/proc/{pid}", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise Rejected(f"peer {pid} has gone") from None  # it gave up and exited
        except OSError as e:
            raise Rejected(f"peer {pid} cannot be inspected: {e.strerror}") from None
        try:
            for ns, mine in self.namespaces.items():
                theirs = self._ident(_NS_PATHS[ns], proc)
                if theirs is None and not os.path.exists(f"/proc/{pid}"):
                    raise Rejected(f"peer {pid} has gone")  # exited since the open
                if theirs != mine:
                    raise Rejected(f"peer is in another {ns} namespace")
            if self._ident("root", proc) != self.root:
                raise Rejected("peer has another root directory")
            status = os.open("status", os.O_RDONLY | os.O_CLOEXEC, dir_fd=proc)
            try:
                text = os.read(status, 8192)
            finally:
                os.close(status)
        except OSError as e:
            raise Rejected(f"peer {pid} cannot be inspected: {e.strerror}") from None
        finally:
            os.close(proc)
        if frozenset(int(g) for g in status_field(text, b"Groups").split()) != self.groups:
            raise Rejected("peer has other supplementary groups")

    def check_request(self, req: Request, peer_pid: int) -> None:
        """What a forked monitor could not mirror: refused here rather than found later."""
        if req.pid != peer_pid:
            raise Rejected(f"request says pid {req.pid}, peer is {peer_pid}")
        if not self.can_raise_limits:
            for lim in req.rlimits:
                hard = self.hard_limits[lim.resource]
                if hard != resource.RLIM_INFINITY and (lim.hard == -1 or lim.hard > hard):
                    raise Rejected(f"rlimit {lim.resource}: hard limit {lim.hard} is above "
                                   f"the server's {hard}")
            if req.oom_score_adj < self.oom_score_adj:
                raise Rejected(f"oom_score_adj {req.oom_score_adj} is below the server's "
                               f"{self.oom_score_adj}")
        if req.nice < self.nice and not self.can_renice:
            raise Rejected(f"nice {req.nice} is below the server's {self.nice}")
