"""Relay of the container's stdout/stderr to the log sinks (and, later, attach clients).

Reads are as large as the pipe holds (the pipe is enlarged to 1 MiB in launch.make_pipe):
few wake-ups, and the per-line work happens in logformat's whole-buffer operations.
"""

from __future__ import annotations

import errno
import os
import select
from collections.abc import Awaitable, Callable

import trio

from pymon.diag import log
from pymon.logs import Sinks

READ_SIZE = 256 * 1024
COALESCE_BYTES = 64 * 1024  # a round that read less than this ...
COALESCE_WINDOW = 0.002  # ... this soon after the previous one means a flood of small writes
COALESCE_DELAY = 0.001


class Relay:
    """One container output fd -> sinks, until EOF."""

    def __init__(self, fd: int, stream: bytes, sinks: Sinks,
                 fanout: Callable[[bytes, bytes], None] | None = None) -> None:
        self.fd = fd
        self.stream = stream
        self.sinks = sinks
        self.fanout = fanout
        self.eof = trio.Event()
        self.last_data = 0.0  # trio time of the last read that returned data
        self.relayed = 0  # bytes read from the container (the SIGUSR1 state report)
        os.set_blocking(fd, False)

    def read_available(self, limit: int = READ_SIZE) -> int:
        """Relay what can be read now, at most `limit` bytes. Returns the bytes read: 0
        when the pipe would block or is at EOF."""
        try:
            # os.read allocates READ_SIZE and shrinks the result in place: no second copy
            # (the heap is kept warm by _native.keep_heap, so this costs no page faults)
            chunk = os.read(self.fd, min(limit, READ_SIZE))
        except BlockingIOError:
            return 0
        except OSError as e:
            if e.errno != errno.EIO:  # EIO: a tty whose other side is gone, i.e. EOF
                log.warning("read from container %s failed: %s", self.stream.decode(), e.strerror)
            chunk = b""
        if not chunk:
            self.eof.set()
            return 0
        self.last_data = trio.current_time()
        self.relayed += len(chunk)
        self.sinks.write(chunk, self.stream)
        if self.fanout is not None:
            self.fanout(chunk, self.stream)
        return len(chunk)

    def relay_upto(self, count: int) -> None:
        """Relay `count` bytes that are already waiting (fewer if the fd has fewer)."""
        while count > 0 and not self.eof.is_set():
            done = self.read_available(count)
            if not done:
                return
            count -= done

    def drain(self) -> None:
        """Everything still in the pipe, without waiting (the final drain at exit)."""
        while not self.eof.is_set() and self.read_available():
            pass  # until the pipe is empty

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


async def pump(relays: list[Relay],
               backpressure: Callable[[], Awaitable[None] | None] | None = None) -> None:
    """Relay all streams from one task until each reaches EOF.

    One task with a private epoll set (itself pollable, so trio waits on it) instead of a
    task per stream: when stdout and stderr are both readable, stdout is read first, so
    `echo out; echo err >&2` is logged in the order it was written. Trio would otherwise
    run two ready tasks in a random order."""
    ep = select.epoll()
    last_round = 0.0
    try:
        live = [r for r in relays if not r.eof.is_set()]
        for r in live:
            ep.register(r.fd, select.EPOLLIN)
        while live:
            got = 0
            for r in live:
                got += r.read_available()
            for r in [r for r in live if r.eof.is_set()]:
                ep.unregister(r.fd)  # a hung-up pipe would keep the epoll set readable
                live.remove(r)
            if got:
                now = trio.current_time()
                waiting = backpressure() if backpressure is not None else None
                if waiting is not None:
                    await waiting  # a lagging attach client: see attach.py
                elif got < COALESCE_BYTES and now - last_round < COALESCE_WINDOW:
                    # A flood arriving in small writes: let the pipe fill for a moment so
                    # the next read is large. Per-read work is what costs CPU here, and
                    # this adds at most COALESCE_DELAY of latency, only under a flood.
                    await trio.sleep(COALESCE_DELAY)
                else:
                    await trio.lowlevel.checkpoint()  # let other tasks run
                last_round = now
            elif live:
                await trio.lowlevel.wait_readable(ep.fileno())
    finally:
        ep.close()
