"""-T expiry: the timed-out process and everything it started, killed and waited for.

conmon SIGKILLs the process group and exits at once: the killed process is left for
someone else to reap, and whatever the process started in another group (`setsid`, a
shell with job control) keeps running. Under CRI-O that is an exec probe's leftovers
inside the user's container. Here the whole tree is stopped, then killed, then waited for:

1. SIGSTOP the root's process group, then, until a scan of /proc finds nothing new, every
   process whose parent chain leads to the root or that is in the root's session (runc
   makes an exec'd process a session leader). Stopped processes cannot fork, so the
   fixed point is the whole tree; without the stop, a child forked between a scan and the
   kill of its parent would be re-parented to the container's init and escape.
2. SIGKILL each of them through a pidfd (opened while it was alive, so a reused pid is
   never signalled).
3. Wait, up to REAP_DEADLINE, until each is dead; reap the root and anything re-parented
   to us (M is a subreaper); give the others, re-parented to the container's init when
   their parent died, up to REAPED_GRACE to be reaped by it (pause does so at once).

Pure /proc parsing (`parse_stat`, `select_tree`) is kept apart from the fd-touching code.
Not caught: a process that left the session *and* whose parent exited before the timer
fired (a double-forked daemon): it is the container's now, as under conmon.
"""

from __future__ import annotations

import os
import signal

TYPE_CHECKING = False  # annotations only: collections.abc is not loaded by a bare
if TYPE_CHECKING:  # interpreter, and the trio-free ExecSync monitor imports this module
    from collections.abc import Callable, Iterable, Mapping

# How long the monitor waits, after SIGKILL, for the killed processes to be reaped before
# it reports the timeout anyway. A SIGKILLed process dies within milliseconds unless it is
# in uninterruptible sleep (D state, e.g. stuck I/O): nothing can hurry that.
REAP_DEADLINE = 2.0
# How long, once they are dead, the killed processes that are not ours get to be reaped by
# the container's init before the timeout is reported.
REAPED_GRACE = 0.1
# Rounds of scan-and-stop before killing whatever was found (a fork bomb outruns any bound).
MAX_STOP_ROUNDS = 50


class ProcStat:
    """The fields of /proc/PID/stat used here."""

    __slots__ = ("pgrp", "pid", "ppid", "session", "start", "state")

    def __init__(self, pid: int, state: str, ppid: int, pgrp: int, session: int,
                 start: int) -> None:
        self.pid, self.state, self.ppid = pid, state, ppid
        self.pgrp, self.session, self.start = pgrp, session, start


def parse_stat(pid: int, text: str) -> ProcStat:
    """One /proc/PID/stat line. comm (field 2) may hold spaces and parentheses, so the
    fields are taken after its last ')'."""
    rest = text[text.rindex(")") + 2:].split()
    # rest[0] is field 3 (state); field N is rest[N - 3]
    return ProcStat(pid, rest[0], int(rest[1]), int(rest[2]), int(rest[3]), int(rest[19]))


def select_tree(root: int, procs: Mapping[int, ProcStat]) -> set[int]:
    """The pids of `root` and every process below it or in its session (zombies too)."""
    children: dict[int, list[int]] = {}
    for p in procs.values():
        children.setdefault(p.ppid, []).append(p.pid)
    found = {root} if root in procs else set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    if root in procs and procs[root].session == root:
        found.update(p.pid for p in procs.values() if p.session == root)
    return found


def scan(pids: Iterable[str] | None = None) -> dict[int, ProcStat]:
    """Every process in /proc (the host's view: M runs in the host's pid namespace)."""
    out: dict[int, ProcStat] = {}
    for name in pids if pids is not None else os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                out[int(name)] = parse_stat(int(name), f.read())
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
    return out


class Victim:
    """A process of the tree, held by a pidfd so that its pid cannot be reused under us."""

    __slots__ = ("pid", "pidfd", "start")

    def __init__(self, pid: int, start: int, pidfd: int) -> None:
        self.pid, self.start, self.pidfd = pid, start, pidfd

    def signal(self, sig: int) -> None:
        try:
            signal.pidfd_send_signal(self.pidfd, sig)
        except ProcessLookupError:
            pass

    def reaped(self) -> bool:
        """Gone from the process table (not even a zombie)."""
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                return parse_stat(self.pid, f.read()).start != self.start
        except (OSError, ValueError, IndexError):
            return True

    def close(self) -> None:
        os.close(self.pidfd)


def _hold(stat: ProcStat) -> Victim | None:
    try:
        fd = os.pidfd_open(stat.pid)
    except OSError:
        return None
    victim = Victim(stat.pid, stat.start, fd)
    if victim.reaped():  # the pid was reused between the scan and pidfd_open
        victim.close()
        return None
    return victim


def stop_and_kill(root: int) -> list[Victim]:
    """Steps 1 and 2. Returns the killed processes (caller waits for them and closes)."""
    held: dict[int, Victim] = {}
    try:
        pgid = os.getpgid(root)
        if pgid > 1 and pgid != os.getpgid(0):
            os.killpg(pgid, signal.SIGSTOP)
    except ProcessLookupError:
        pass
    for _ in range(MAX_STOP_ROUNDS):
        procs = scan()
        new = [procs[pid] for pid in select_tree(root, procs) if pid not in held]
        if not new:
            break
        for stat in new:
            victim = _hold(stat)
            if victim is not None:
                held[stat.pid] = victim
                victim.signal(signal.SIGSTOP)
    for victim in held.values():
        victim.signal(signal.SIGKILL)
    return list(held.values())


async def kill_and_reap(root: int, sweep: Callable[[], None],
                        deadline: float = REAP_DEADLINE) -> list[int]:
    """Stop, kill and wait for `root`'s tree (steps 1-3). `sweep` reaps our exited
    children (the monitor's reaper; called here too, so that reaping does not wait for
    the SIGCHLD task's turn). Returns the pids still alive at the deadline."""
    import trio

    victims = stop_and_kill(root)
    try:
        with trio.move_on_after(deadline):
            for victim in victims:
                await trio.lowlevel.wait_readable(victim.pidfd)  # readable once it has died
        sweep()  # ours: the root and whatever was re-parented to us
        # The others are zombies re-parented to the container's init, which reaps them
        # (pause does at once). There is no event for that: look again for a moment. An
        # init that never reaps keeps them as zombies, as it keeps every orphan.
        with trio.move_on_after(REAPED_GRACE):
            while not all(v.reaped() for v in victims):
                await trio.sleep(0.005)
                sweep()
        return [v.pid for v in victims if not _dead(v.pidfd)]
    finally:
        for victim in victims:
            victim.close()


def _dead(pidfd: int) -> bool:
    import select

    return bool(select.select([pidfd], [], [], 0)[0])


def kill_and_reap_blocking(root: int, sweep: Callable[[], None],
                           deadline: float = REAP_DEADLINE) -> list[int]:
    """`kill_and_reap` for a monitor without trio (pymon.probe): the same steps, waiting
    with select() and short sleeps instead of trio."""
    import select
    import time

    victims = stop_and_kill(root)
    try:
        end = time.monotonic() + deadline
        for victim in victims:
            select.select([victim.pidfd], [], [], max(0.0, end - time.monotonic()))
        sweep()
        end = time.monotonic() + REAPED_GRACE
        while not all(v.reaped() for v in victims) and time.monotonic() < end:
            time.sleep(0.005)  # reaped by the container's init: no event for that
            sweep()
        return [v.pid for v in victims if not _dead(v.pidfd)]
    finally:
        for victim in victims:
            victim.close()
