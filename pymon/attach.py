"""The attach socket (§6): output to every client, input to the container's stdin.

conmon writes to each client with a blocking write, so one client that stops reading
stalls the container, the log and every other client. Here each client has its own queue
and writer task. Output is never reordered or partly dropped for a client we keep:

* a client whose queue passes HIGH_WATER makes the relay wait until it is back to
  LOW_WATER (the container is slowed to the pace of its slowest *reading* client, as
  with conmon, and nothing is lost);
* a client that is over HIGH_WATER and has taken nothing for STALL_TIMEOUT seconds is
  disconnected, and everyone else goes on. Lagging clients are waited for together, each
  against its own deadline (STALL_TIMEOUT after it last took something): N stalled clients
  hold the container no longer than one does.

A client whose peer has closed its end is released at once, even while the container is
quiet (nothing to write would otherwise reveal the hangup): see Hangups.
"""

from __future__ import annotations

import errno
import os
import select
import socket
from collections import deque
from collections.abc import Callable

import trio

from pymon.diag import log

PACKET_DATA_MAX = 8192  # podman reads 8193-byte packets: type byte + 8192
INPUT_READ_MAX = 32768  # podman sends at most 32 KiB per packet
HIGH_WATER = 1 << 20
LOW_WATER = HIGH_WATER // 2
STALL_TIMEOUT = 2.0
STREAM_TYPES = {b"stdout": 2, b"stderr": 3}


class Stdin:
    """The container's stdin (the -i pipe, or the pty master), shared by all clients."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.lock = trio.Lock()  # one client's packet is written whole before the next
        os.set_blocking(fd, False)

    @property
    def closed(self) -> bool:
        return self.fd < 0

    async def write(self, data: bytes) -> None:
        async with self.lock:
            view = memoryview(data)
            while view and not self.closed:
                try:
                    view = view[os.write(self.fd, view):]
                except BlockingIOError:
                    try:
                        await trio.lowlevel.wait_writable(self.fd)
                    except trio.ClosedResourceError:
                        return  # closed by another client's EOF meanwhile
                except OSError as e:  # the container closed its stdin, or exited
                    log.debug("write to container stdin failed: %s", e.strerror)
                    self.close()

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            trio.lowlevel.notify_closing(fd)
            os.close(fd)


class Client:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.fd = sock.fileno()  # kept after close, to forget the client in Hangups
        self.queue: deque[bytes] = deque()
        self.queued = 0
        self.wake = trio.Event()  # the writer has something to send
        self.room = trio.Event()  # the queue fell to LOW_WATER (the relay may go on)
        self.emptied = trio.Event()  # the queue is empty (the final flush is done)
        # when the client last took a packet, or was last given something to take: its
        # stall is measured from here (an idle client owes nothing, however long it idles)
        self.last_progress = trio.current_time()
        self.cancel = trio.CancelScope()
        self.closed = False
        self.hangups: Hangups | None = None  # watching us once our input reached EOF

    def enqueue(self, packets: list[bytes], size: int) -> None:
        if not self.queue:
            self.last_progress = trio.current_time()
        self.queue.extend(packets)
        self.queued += size
        self.wake.set()

    async def send_queued(self) -> None:
        while not self.closed:
            if not self.queue:
                self.emptied.set()
                self.wake = trio.Event()
                await self.wake.wait()
                continue
            packet = self.queue[0]
            try:
                self.sock.send(packet)
            except BlockingIOError:
                try:
                    await trio.lowlevel.wait_writable(self.sock)
                except trio.ClosedResourceError:
                    return  # dropped or closed meanwhile
                continue
            except OSError as e:  # EPIPE, ECONNRESET: the client went away
                log.debug("attach client write failed: %s", e.strerror)
                self.close()
                return
            self.queue.popleft()
            self.queued -= len(packet)
            self.last_progress = trio.current_time()
            if self.queued <= LOW_WATER:
                self.room.set()  # one wake-up for the relay, not one per packet

    async def receive_input(self, stdin: Stdin | None, close_stdin_on_eof: bool) -> None:
        while not self.closed:
            try:
                data = self.sock.recv(INPUT_READ_MAX)
            except BlockingIOError:
                try:
                    await trio.lowlevel.wait_readable(self.sock)
                except trio.ClosedResourceError:
                    return
                continue
            except OSError:
                data = b""
            if not data:  # EOF, SHUT_WR or a zero-length packet (§6.4)
                try:
                    self.sock.shutdown(socket.SHUT_RD)
                except OSError:
                    pass
                if stdin is not None and close_stdin_on_eof:
                    stdin.close()
                return
            if stdin is not None and not stdin.closed:
                await stdin.write(data)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.hangups is not None:  # before the fd number can be reused
                self.hangups.forget(self)
            self.cancel.cancel()
            for event in (self.wake, self.room, self.emptied):
                event.set()
            trio.lowlevel.notify_closing(self.sock)
            self.sock.close()


class Hangups:
    """Clients whose input has reached EOF, watched for the peer's full close.

    After EOF on its input a client is kept for output (podman half-closes to pass stdin's
    EOF on and goes on reading), so only a write would notice that the peer is gone, and a
    quiet container writes nothing: a client reconnecting in a loop could pile up fds until
    the monitor's limit. One epoll set for all of them, registered with no events: epoll
    always reports EPOLLHUP, which a unix socket raises only once the peer has shut down
    both directions (a half-close raises EPOLLRDHUP, not asked for). Level-triggered, and
    a client is unregistered when reported, so it never spins."""

    def __init__(self) -> None:
        self.ep = select.epoll()
        self.clients: dict[int, Client] = {}

    def watch(self, client: Client) -> None:
        if client.closed or client.fd in self.clients:
            return
        self.ep.register(client.fd, 0)
        self.clients[client.fd] = client
        client.hangups = self

    def forget(self, client: Client) -> None:
        if self.clients.get(client.fd) is client:
            del self.clients[client.fd]
            client.hangups = None
            try:
                self.ep.unregister(client.fd)
            except (OSError, ValueError):
                pass  # the epoll set is closed already (the monitor is done)

    async def run(self, on_hangup: Callable[[Client], None]) -> None:
        while not self.ep.closed:  # closed before this task first ran: nothing to watch
            try:
                await trio.lowlevel.wait_readable(self.ep.fileno())
            except trio.ClosedResourceError:
                return  # close(): the monitor is done
            for fd, _ in self.ep.poll(0):
                client = self.clients.get(fd)
                if client is not None:
                    self.forget(client)
                    on_hangup(client)

    def close(self) -> None:
        trio.lowlevel.notify_closing(self.ep.fileno())
        self.ep.close()


class AttachServer:
    def __init__(self, listener_fd: int, stdin: Stdin | None, close_stdin_on_eof: bool) -> None:
        self.listener = socket.socket(fileno=listener_fd)
        self.listener.setblocking(False)
        self.stdin = stdin
        self.close_stdin_on_eof = close_stdin_on_eof
        self.clients: list[Client] = []
        self.nursery: trio.Nursery | None = None  # serve()'s: runs each client's tasks
        self.hangups = Hangups()
        self.stalled = 0  # clients disconnected for not reading (the SIGUSR1 state report)

    def accept_pending(self) -> None:
        """Take every connection already waiting in the backlog. Called before the first
        read of container output: an engine connects before `runtime start` and must see
        the container's first byte."""
        while self.listener.fileno() >= 0:
            try:
                conn, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # EMFILE and the like: serve() reports and retries
            conn.setblocking(False)
            client = Client(conn)
            self.clients.append(client)
            if self.nursery is not None:
                self.nursery.start_soon(self._run_client, client)

    async def serve(self) -> None:
        # A container that had exited before this task first ran (an exec'd `true` is
        # usually gone before `runc exec` is) has had its exit recorded and this server
        # closed already (its listener's fileno is -1): the closed listener is not touched
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            for client in self.clients:
                nursery.start_soon(self._run_client, client)
            nursery.start_soon(self.hangups.run, self._hung_up)
            while self.listener.fileno() >= 0:
                try:
                    conn, _ = self.listener.accept()
                except BlockingIOError:
                    try:
                        await trio.lowlevel.wait_readable(self.listener)
                    except trio.ClosedResourceError:
                        nursery.cancel_scope.cancel()  # close(): the monitor is done
                        return
                    continue
                except OSError as e:
                    if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                        log.warning("attach accept failed: %s", e.strerror)
                        await trio.sleep(0.1)  # out of fds: retry rather than spin
                        continue
                    raise
                conn.setblocking(False)
                client = Client(conn)
                self.clients.append(client)
                nursery.start_soon(self._run_client, client)

    async def _run_client(self, client: Client) -> None:
        with client.cancel:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.send_queued)
                await client.receive_input(self.stdin, self.close_stdin_on_eof)
                # input is done; output continues until the client hangs up, a write
                # fails, or the monitor closes
                if not client.closed:
                    self.hangups.watch(client)
        self._forget(client)

    def _hung_up(self, client: Client) -> None:
        log.debug("attach client hung up: released")
        self._forget(client)

    def _forget(self, client: Client) -> None:
        client.close()
        if client in self.clients:
            self.clients.remove(client)

    def broadcast(self, chunk: bytes, stream: bytes) -> None:
        """Queue `chunk` as packets of at most 8193 bytes for every client (newest first,
        as conmon serves them). A connection waiting in the backlog is taken first: it came
        before this output was read, so it must see it, whichever task trio runs first (a
        warm monitor has no import delay that lets the accept task win the race)."""
        self.accept_pending()
        if not self.clients:
            return
        kind = bytes((STREAM_TYPES[stream],))
        if len(chunk) <= PACKET_DATA_MAX:
            packets = [kind + chunk]
        else:
            packets = [kind + chunk[i:i + PACKET_DATA_MAX]
                       for i in range(0, len(chunk), PACKET_DATA_MAX)]
        size = len(chunk) + len(packets)
        for client in reversed(self.clients):
            client.enqueue(packets, size)

    def lagging(self) -> bool:
        return any(c.queued > HIGH_WATER for c in self.clients)

    async def wait_for_room(self) -> None:
        """Wait while clients are over HIGH_WATER, until each is back to LOW_WATER; drop a
        client over HIGH_WATER that has taken nothing for STALL_TIMEOUT.

        All lagging clients are waited for at once, each against its own deadline counted
        from its last progress, not from the start of this wait: waiting for them one after
        another held the container about STALL_TIMEOUT per stalled client."""
        waiting = [c for c in self.clients if c.queued > HIGH_WATER and not c.closed]
        while True:
            now = trio.current_time()
            for client in list(waiting):
                if client.closed or client.queued <= LOW_WATER:
                    waiting.remove(client)
                elif now - client.last_progress >= STALL_TIMEOUT:
                    waiting.remove(client)  # reading, but too slowly to wait for: go on
                    if client.queued > HIGH_WATER:
                        log.warning("attach client stopped reading with %d bytes queued: "
                                    "disconnected", client.queued)
                        self.stalled += 1
                        self._forget(client)
            if not waiting:
                return
            room = trio.Event()  # shared: whichever client reaches LOW_WATER wakes us
            for client in waiting:
                client.room = room
            with trio.move_on_at(min(c.last_progress for c in waiting) + STALL_TIMEOUT):
                await room.wait()

    def queued(self) -> bool:
        """Whether some client has output still to take."""
        return any(c.queue and not c.closed for c in self.clients)

    async def flush(self, timeout: float) -> None:
        """Give clients up to `timeout` seconds to take what is queued for them."""
        with trio.move_on_after(timeout):
            for client in list(self.clients):
                if client.queue and not client.closed:
                    client.emptied = trio.Event()
                    await client.emptied.wait()

    def close(self) -> None:
        """Every client sees EOF; the listener stops accepting (§8.3 step 7)."""
        for client in list(self.clients):
            try:
                client.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._forget(client)
        trio.lowlevel.notify_closing(self.listener)
        self.listener.close()
        self.hangups.close()
