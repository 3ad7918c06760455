"""Warming the server once, so that its forks start warm: every module a monitor uses is
imported, one short monitor-like trio workload runs (first calls fill caches and create
what trio creates lazily), and the heap is frozen so that the collector never touches the
shared objects again (a collection in a monitor would otherwise dirty, and so copy, every
page that holds one).

A module a monitor imports after the fork costs every monitor its own copy of the pages
the import machinery writes (~0.3 MiB measured for one small module): import_all() must
cover every pymon module a monitor can reach (tests/unit/test_warm.py checks it). The
collector stays off while warming, as the gc documentation advises for fork servers: a
collection frees cycles in the middle of pages the monitors share, and a monitor's
allocations would fill those holes, copying the pages."""

from __future__ import annotations

import gc
import os
import signal
import socket

from pymon.server import settle

WORKLOAD_RUNS = 30  # ~10 ms in all
RELAY_CHUNKS = 20  # reads the relay makes (~20 ms: each waits out the pump's coalescing)


def import_all() -> None:
    # What a monitor imports lazily on its way, imported here once for every monitor.
    import fcntl  # noqa: F401
    import json  # noqa: F401
    import random  # noqa: F401
    import resource  # noqa: F401
    import select  # noqa: F401
    import time  # noqa: F401
    import traceback  # noqa: F401

    import trio  # noqa: F401

    from pymon import _native, exitfile, journald, notify, oom, procattrs, terminal  # noqa: F401
    from pymon.monitor import life, lifeline, prepare, probe, setup, verdict  # noqa: F401
    from pymon.server import twin  # noqa: F401


async def _workload() -> None:
    import trio

    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        got = trio.Event()

        async def reader() -> None:
            await trio.lowlevel.wait_readable(r)
            os.read(r, 64)
            got.set()

        with trio.open_signal_receiver(signal.SIGCHLD):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(reader)
                await trio.lowlevel.checkpoint()
                os.write(w, b"2024-01-01T00:00:00.000000000Z stdout F warm\n")
                with trio.move_on_after(5):
                    await got.wait()
                nursery.cancel_scope.cancel()
    finally:
        os.close(r)
        os.close(w)


async def _relay_workload() -> None:
    """The relay's hot path as a monitor runs it (stdio.pump -> Sinks -> K8sFileLog, the
    attach fan-out with no client), for RELAY_CHUNKS reads, so that it is quickened and
    specialized here in the shared pages: settle.py leaves code that is not warm by then
    unspecialized for good."""
    import trio

    from pymon.attach import AttachServer
    from pymon.logs import K8sFileLog, Sinks
    from pymon.stdio import Relay, pump

    log_fd = os.memfd_create("pymon-warm-log", os.MFD_CLOEXEC)
    r, w = os.pipe2(os.O_CLOEXEC)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        listener.bind("")  # an abstract address of the kernel's choosing: nothing on disk
        listener.listen()
        attach = AttachServer(listener.detach(), None, False)
        sinks = Sinks([K8sFileLog("pymon-warm-log", log_fd)])
        read, reads = trio.open_memory_channel[None](RELAY_CHUNKS)

        def fanout(chunk: bytes, stream: bytes) -> None:
            attach.broadcast(chunk, stream)
            read.send_nowait(None)

        relay = Relay(r, b"stdout", sinks, fanout)
        lines = b"warm %d\n" * 8

        async def write() -> None:
            nonlocal w
            for i in range(RELAY_CHUNKS):
                os.write(w, lines % tuple(range(i, i + 8)))
                await reads.receive()  # one read per write: the pump loops
            os.close(w)
            w = -1

        async with trio.open_nursery() as nursery:
            nursery.start_soon(write)
            await pump([relay])
        attach.close()
    finally:
        for fd in (r, w, log_fd):
            if fd >= 0:
                os.close(fd)
        listener.close()


def warm(settle_code: bool = True) -> int:
    """Returns how many code objects were settled (settle.py)."""
    settled = 0
    gc.disable()
    try:
        _warm()
        if settle_code:
            settled = settle.settle()
        gc.freeze()
    finally:
        gc.enable()
    return settled


def _warm() -> None:
    import trio

    from pymon import logformat, sync
    from pymon.cli import parse_args

    import_all()
    parse_args(["--api-version", "1", "-c", "warm", "-u", "warm", "-r", "/bin/true",
                "-b", "/", "-l", "k8s-file:/dev/null", "--exit-dir", "/"])
    sync.encode("data", 1, "warm")
    # the request path too: msgspec builds its decoder state on first use
    from pymon import handover
    from pymon.server.wire import decode_request

    decode_request(handover.encode_request(
        handover.__name__, os.getpid(), [b"pymon"], [b"A=b"], b"/", 0o22, [0], [(7, 1, 2)],
        0, 0, 0, 0), 1)
    logformat.records(b"warm\n", b"stdout", logformat.timestamp())
    # Run often enough that CPython specializes trio's run loop here: a monitor that runs
    # code specialized once, in the shared pages, writes to fewer of them
    for _ in range(WORKLOAD_RUNS):
        trio.run(_workload)
    trio.run(_relay_workload)

