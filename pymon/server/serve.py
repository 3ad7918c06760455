"""The server's loop: accept launchers, check them, fork one monitor per request.

Single-threaded, no trio loop (a fork must not copy a running one): a poll set of the
listening socket, a signal wakeup pipe, and connections that have not sent their request
yet, each with a deadline so that a silent client costs one fd for a second and nothing
else. A request is served or refused at once; nothing a launcher sends can make the server
wait, and nothing goes wrong for other launchers or for running monitors when it is bad.
"""

from __future__ import annotations

import _thread
import array
import os
import resource
import select
import signal
import socket
import stat
import struct
import sys
import time

from pymon import _native, handover
from pymon.cli import VERSION

# Imported here, not in the forked child: an import statement there runs the import
# machinery's lookups on every launch, and each page it touches is copied
from pymon.server import cgroups, twin
from pymon.server.peer import Self
from pymon.server.rescue import Rescuer
from pymon.server.spare import COMM, Spare, can_leave_idle, fork_spare
from pymon.server.stamp import CodeStamp
from pymon.server.wire import Rejected, Request, decode_request

REQUEST_DEADLINE = 1.0  # a connection that has sent nothing by then is dropped
# The next spare is forked once the server has been this quiet (spare.py): a fork and a
# rehearsal on the other CPU would slow the runtime of the launch just handed over
SPARE_QUIET = 0.02
SPARE_RETRY = 1.0  # after a spare died unused: not a fork loop
# Nor while a container's launch just served is still starting: until its monitor has
# registered the container (the runtime's `create` is done), or has exited, or this long
# has passed. A spare forked beside a `runc create` took CPU from it on a 2-CPU host: the
# create took 19.4 ms against conmon's 18.1 in the start-up bench, the same 19.1 when no
# spare was forked during it. Exec sessions do not hold it: CRI-O's exec probes come back
# to back, and held until each probe's monitor exited, fewer found a spare ready (51 of
# 101 in bench/execsync.py against 60-71) for no CPU or wall the bench could tell.
STARTING_MAX = 1.0
BACKLOG = 128
_CRED = struct.Struct("3i")
_SEQPACKET = int(socket.SOCK_SEQPACKET)
_EXEC_FLAGS = frozenset((b"-e", b"--exec"))


def _is_exec(argv: list[bytes]) -> bool:
    """conmon's -e/--exec among the arguments: a flag, never an option's value in what
    podman and CRI-O pass."""
    return not _EXEC_FLAGS.isdisjoint(argv)


def say(text: str) -> None:
    try:
        os.write(2, f"pymon-server[{os.getpid()}]: {text}\n".encode(errors="replace"))
    except OSError:
        pass


def take_token(fd: int) -> None:
    """Take a launcher's token (handover.py) without waiting, and close it; raises
    Rejected if it is not there to take. The pipe is the launcher's, so it is made
    non-blocking here: a blocking one whose writer keeps it open and empty would otherwise
    stall the server."""
    try:
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            raise Rejected("the token is not a pipe")
        os.set_blocking(fd, False)
        took = os.read(fd, 1) == handover.TOKEN
    except BlockingIOError:
        took = False
    except OSError as e:
        raise Rejected(f"the token cannot be read: {e.strerror}") from None
    finally:
        os.close(fd)
    if not took:
        raise Rejected("the launcher ran cold first (its budget ran out)")


class Server:
    def __init__(self, listener: socket.socket, path: str | None, verbose: bool = False,
                 spares: bool = True) -> None:
        self.listener = listener
        self.listener.setblocking(False)
        self.path = path
        self.ident = os.stat(path).st_ino if path else None
        self.verbose = verbose
        self.me = Self()
        self.stamp = CodeStamp()
        self.mounts = cgroups.read_mounts()
        self.pending: dict[int, tuple[socket.socket, float]] = {}
        self.monitors: set[int] = set()
        self.served = self.refused = 0
        self.handed = 0  # of those served, handed to a spare
        self.stopping = False
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.poller = select.poll()
        self.rescuer = Rescuer(self.poller, self.mounts, say, self.debug)
        self.spares = spares
        self.spare: Spare | None = None
        self.spare_due: float | None = None  # monotonic; None: none wanted now
        self.starting: dict[int, float] = {}  # monitor pid -> until when it holds a spare
        self.sample = b""  # twin.sample_request(), once our own state is final (run)
        self.spare_idle = False  # spares rehearse at SCHED_IDLE (spare.can_leave_idle)

    def debug(self, text: str) -> None:
        if self.verbose:
            say(text)

    # --- the loop --------------------------------------------------------------------

    def run(self) -> int:
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # reaped in the loop
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._stop)
        try:
            # A killed monitor's container is re-parented to us, so that we can reap it
            # and a replacement can record its exit (rescue.py)
            _native.set_child_subreaper(True)
        except OSError as e:
            self.rescuer.enabled = False
            say(f"not a subreaper ({e.strerror}): killed monitors will not be rescued")
        try:
            # A channel and up to two pipe dups per running warm monitor: the default soft
            # limit (1024) would cap the server near 250 containers. Forked monitors and
            # replacements take the launcher's limits again (twin._process_state).
            _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (OSError, ValueError) as e:
            say(f"cannot raise the open file limit: {e}")
        # What a forked monitor starts from; set no disposition or mask after this
        twin.note_signals()
        if self.spares:
            self.sample = twin.sample_request(COMM)
            self.spare_idle = can_leave_idle(self.me)
            self.spare_due = 0.0
        poller = self.poller
        poller.register(self.listener.fileno(), select.POLLIN)
        poller.register(self.wake_r, select.POLLIN)
        say(f"serving on {self.path or 'an inherited socket'} (pymon {VERSION})")
        # Once, not before each fork: the server writes with os.write (say), so nothing
        # is buffered later that a monitor could write out again as its own
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            while not self.stopping:
                timeout = None
                deadlines = [deadline for _, deadline in self.pending.values()]
                if self.spare_due is not None:
                    deadlines.append(max(self.spare_due, self._held_until()))
                if deadlines:
                    timeout = max(0, int((min(deadlines) - time.monotonic()) * 1000) + 1)
                events = poller.poll(timeout)
                if self.spare_due is not None:
                    if events:  # not quiet yet
                        self.spare_due = max(self.spare_due, time.monotonic() + SPARE_QUIET)
                    elif time.monotonic() >= max(self.spare_due, self._held_until()):
                        self._fork_spare()
                signalled = False
                for fd, _ in events:
                    if fd == self.wake_r:
                        self._drain_wakeups()
                        signalled = True
                    elif fd == self.listener.fileno():
                        self._accept(poller)
                    elif fd in self.pending:
                        conn, _ = self.pending.pop(fd)
                        poller.unregister(fd)
                        with conn:
                            self._serve(conn, may_wait=False)
                    elif self.rescuer.owns(fd):
                        self.rescuer.readable(fd)
                    if self.stopping:
                        break
                if self.pending:
                    self._expire(poller)
                if signalled:  # a child's exit always comes with SIGCHLD, and so here
                    self._reap()
        finally:
            self.close()
        say(f"stopped: {self.served} monitors forked ({self.handed} of them ahead, as spares), "
            f"{self.refused} requests refused, "
            f"{self.rescuer.rescued} containers rescued")
        return 0

    def _stop(self, sig: int, frame: object) -> None:
        self.stopping = True

    def _drain_wakeups(self) -> None:
        try:  # one read: a byte per signal; if more are left, poll says so again
            os.read(self.wake_r, 4096)
        except BlockingIOError:
            pass

    def _accept(self, poller: select.poll) -> None:
        # One connection per wake-up: poll is level-triggered and reports the next one at
        # once, and the loop then ends without raising BlockingIOError on every launch
        try:
            fd, _ = self.listener._accept()  # type: ignore[attr-defined]
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:  # EMFILE and the like: keep serving the others
            say(f"accept failed: {e}")
            return
        # socket.accept() would also convert the family and type to enums on every call
        conn = socket.socket(socket.AF_UNIX, _SEQPACKET, 0, fd)
        conn.setblocking(False)
        # As usual a launcher sent its request as it connected: serve it now
        if self._serve(conn, may_wait=True):
            conn.close()
            return
        self.pending[fd] = (conn, time.monotonic() + REQUEST_DEADLINE)
        poller.register(fd, select.POLLIN)

    def _expire(self, poller: select.poll) -> None:
        now = time.monotonic()
        for fd, (conn, deadline) in list(self.pending.items()):
            if deadline <= now:
                del self.pending[fd]
                poller.unregister(fd)
                self.debug("dropped a connection that sent no request")
                conn.close()

    def _reap(self) -> None:
        """Every child: monitors, their replacements, and (we are a subreaper) whatever is
        re-parented to us, the containers of killed monitors among them."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.monitors.clear()
                return
            if pid == 0:
                return
            self._reaped(pid, status)

    def _reaped(self, pid: int, status: int) -> None:
        """One child reaped, whatever it was (bench/execsync_server.py reaps its own way,
        and calls this)."""
        monitor = pid in self.monitors
        self.monitors.discard(pid)
        self.starting.pop(pid, None)
        if self.spare is not None and pid == self.spare.pid:
            say(f"spare {pid} died unused (wait status {status})")
            self._drop_spare(retry=SPARE_RETRY)
            return
        self.rescuer.reaped(pid, status, monitor)

    # --- the spare (spare.py) ----------------------------------------------------------

    def _fork_spare(self) -> None:
        self.spare_due = None
        if _thread._count():
            say("server has a thread; it will not fork a spare")  # never expected
            return
        try:
            self.spare = fork_spare(self.mounts, self.sample, self.spare_idle)
        except OSError as e:
            say(f"could not fork a spare: {e.strerror or e}")
            self.spare_due = time.monotonic() + SPARE_RETRY
            return
        self.debug(f"forked spare {self.spare.pid}")

    def _held_until(self) -> float:
        """Until when the launches still starting hold the next spare back (STARTING_MAX
        says why); 0 when none does."""
        if not self.starting:
            return 0
        now = time.monotonic()
        for pid, until in list(self.starting.items()):
            watch = self.rescuer.watches.get(pid)
            if until <= now or (watch is not None and watch.registered is not None):
                del self.starting[pid]
        return max(self.starting.values(), default=0)

    def _drop_spare(self, retry: float, kill: bool = False) -> None:
        spare, self.spare = self.spare, None
        if spare is None:
            return
        if kill:
            try:
                os.kill(spare.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        spare.close()
        if self.spares and not self.stopping:
            self.spare_due = time.monotonic() + retry

    def _hand_to_spare(self, data: bytes, conn: socket.socket, received: list[int],
                       channel: int | None) -> int | None:
        """The launch handed to the ready spare: its pid. None if there is none, or it
        could not take it (then it is killed, and the caller forks)."""
        spare = self.spare
        if spare is None or not spare.is_ready():
            return None
        try:
            spare.hand(data, conn.fileno(), received, channel)
        except OSError as e:
            say(f"spare {spare.pid} could not take a launch ({e.strerror}): forking")
            self._drop_spare(retry=SPARE_RETRY, kill=True)
            return None
        self._drop_spare(retry=SPARE_QUIET)  # it is a monitor now: the next one later
        self.handed += 1
        return spare.pid

    # --- one request -----------------------------------------------------------------

    def _serve(self, conn: socket.socket, may_wait: bool) -> bool:
        """Serve or refuse the request on `conn`; False if it has not come yet and
        `may_wait`."""
        received: list[int] = []
        try:
            try:
                data, cred = self._receive(conn, received)
            except BlockingIOError:
                if may_wait:
                    return False
                raise Rejected("no request came") from None
            if _thread._count():
                raise Rejected("server has a thread; it will not fork")  # never expected
            # The launcher's token decides, not an answer: whoever reads its byte first
            # owns the invocation (handover.py). Taking it commits the launcher with no
            # message to wake it, and the monitor starts at once, with no GO to wait for.
            # It is taken before the checks: the launcher's budget (2 ms) runs from its
            # connect, and on a host slow to wake the server the checks' ~0.5 ms decided
            # whether it was still there to take. A refusal from here on is as true as
            # before (no monitor exists), and the launcher, told so, runs cold.
            take_token(received.pop())
            req = self._check(data, cred, len(received))
            peer = cred[0]
        except Rejected as e:
            for fd in received:
                os.close(fd)
            self.refused += 1
            self.debug(f"refused: {e}")
            self._reply(conn, handover.encode_reply(handover.REFUSED, 0, str(e)))
            return True
        try:
            exec_session = _is_exec(req.argv)
            pid = self._fork(req, data, conn, received, exec_session)
        except Rejected as e:
            # No monitor exists, so "refused" is still true: the launcher runs cold
            say(f"could not fork a monitor for launcher {peer}: {e}")
            self._reply(conn, handover.encode_reply(handover.REFUSED, 0, str(e)))
            return True
        finally:
            for fd in received:
                os.close(fd)
        self.served += 1
        self.monitors.add(pid)
        if self.spares and not exec_session:
            self.starting[pid] = time.monotonic() + STARTING_MAX
        if self.verbose:  # not formatted otherwise: every object touched here is copied
            say(f"forked monitor {pid} for launcher {peer}")
        return True

    @staticmethod
    def _reply(conn: socket.socket, data: bytes) -> None:
        try:
            conn.send(data)
        except OSError:
            pass  # the launcher is gone: it will not run cold either way

    def _receive(self, conn: socket.socket,
                 received: list[int]) -> tuple[bytes, tuple[int, int, int]]:
        """The request's bytes and its peer's (pid, uid, gid); its fds are appended to
        `received`, the token last. Checks only what the message is made of."""
        fd_space = socket.CMSG_SPACE((handover.MAX_FDS + 1) * 4)  # and the token
        try:
            data, ancdata, flags, _ = conn.recvmsg(handover.MAX_REQUEST + 1, fd_space)
        except BlockingIOError:
            raise
        except OSError as e:
            raise Rejected(f"reading the request: {e.strerror}") from None
        for level, kind, payload in ancdata:  # close whatever came, whatever happens next
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds = array.array("i")
                fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
                received.extend(fds)
        if flags & socket.MSG_CTRUNC:
            raise Rejected(f"more than {handover.MAX_FDS} fds")
        if flags & socket.MSG_TRUNC or len(data) > handover.MAX_REQUEST:
            raise Rejected(f"request over {handover.MAX_REQUEST} bytes")
        if not data:
            raise Rejected("empty request")
        if not received:
            raise Rejected("no token came with the request")
        pid, uid, gid = _CRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                     _CRED.size))
        return data, (pid, uid, gid)

    def _check(self, data: bytes, cred: tuple[int, int, int], fds: int) -> Request:
        """Whether the server may serve this peer and this request (`fds` came with it,
        besides the token). Raises Rejected; nothing else, since the launcher's token is
        taken by now: an error of ours must still reach it as a refusal, so that it runs
        cold, rather than as the server's death."""
        try:
            pid, uid, gid = cred
            self.me.check_peer(pid, uid, gid)
            req = decode_request(data, fds)
            self._check_code()  # first: a changed server says so, whatever the launcher's
            if req.version != VERSION:
                raise Rejected(f"launcher is pymon {req.version}, server is pymon {VERSION}")
            self.me.check_request(req, pid)
        except Rejected:
            raise
        except Exception as e:  # noqa: BLE001 - see above
            say(f"checking a request failed: {e!r}")
            raise Rejected(f"server error: {e!r}") from None
        return req

    def _check_code(self) -> None:
        changed = self.stamp.changed()
        if changed is not None:
            # An upgrade happened under us: this and every later launcher runs cold until
            # a server with the new code replaces us (systemd restarts it; by hand: start it)
            self.stopping = True
            raise Rejected(f"server code changed since it started ({changed}); server exits")

    def _fork(self, req: Request, data: bytes, conn: socket.socket, received: list[int],
              exec_session: bool) -> int:
        # An exec session is never rescued (its monitor drops the channel): none to make,
        # watch and close for each of CRI-O's exec probes
        channel = None if exec_session else self.rescuer.channel()
        pid = self._hand_to_spare(data, conn, received,
                                  channel[1].fileno() if channel is not None else None)
        if pid is not None:
            if channel is not None:
                channel[1].close()
                self.rescuer.watch(pid, channel[0], req)
            return pid
        try:
            pid = _native.fork()  # not os.fork: see _native/_build.py
        except OSError as e:
            if channel is not None:
                channel[0].close()
                channel[1].close()
            raise Rejected(f"fork failed: {e.strerror}") from None
        if pid == 0:
            twin.forked("warm monitor", lambda: twin.run(
                req, conn.fileno(), received, self.mounts,
                channel[1].fileno() if channel is not None else None))
        if channel is not None:
            channel[1].close()
            self.rescuer.watch(pid, channel[0], req)
        return pid

    def close(self) -> None:
        spare = self.spare
        self._drop_spare(retry=0, kill=True)
        if spare is not None:
            try:
                os.waitpid(spare.pid, 0)
            except ChildProcessError:
                pass
        self.stamp.close()
        for conn, _ in self.pending.values():
            conn.close()
        self.pending.clear()
        self.rescuer.close()
        if self.path and self.ident is not None:
            try:
                if os.stat(self.path).st_ino == self.ident:
                    os.unlink(self.path)  # only our own socket, not a successor's
            except OSError:
                pass
        self.listener.close()
