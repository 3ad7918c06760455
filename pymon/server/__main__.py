"""`pymon-server`: run the warm-monitor server in the foreground.

    pymon-server [--socket PATH] [--verbose]

The socket defaults to the path launchers look at (/run/pymon/server.sock for root,
$XDG_RUNTIME_DIR/pymon/server.sock for other users, PYMON_SOCKET if set). Under systemd's
socket activation (LISTEN_FDS) the inherited socket is used instead.
"""

from __future__ import annotations

import argparse
import errno
import os
import socket
import sys

from pymon.cli import VERSION
from pymon.handover import default_socket_path
from pymon.server.serve import BACKLOG, Server, say


def bind(path: str) -> socket.socket:
    """Listen at `path`, reachable by our own user only: the directory is created 0700 and
    the socket 0600. A live server there is an error; a stale file is replaced."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, mode=0o700, exist_ok=True)
    if os.path.lexists(path):
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            probe.connect(path)
        except OSError as e:
            if e.errno not in (errno.ECONNREFUSED, errno.ENOTSOCK, errno.EPROTOTYPE):
                raise
            os.unlink(path)  # nobody listens there: a crashed server's leftover
        else:
            raise SystemExit(f"pymon-server: a server is already listening on {path}")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    old = os.umask(0o177)
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    sock.listen(BACKLOG)
    return sock


def inherited() -> socket.socket | None:
    """systemd socket activation: one SOCK_SEQPACKET socket at fd 3."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()) or os.environ.get("LISTEN_FDS") != "1":
        return None
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    os.set_inheritable(3, False)
    return socket.socket(fileno=3)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="pymon-server",
                                 description="Serve warm pymon monitors: fork one per launch.")
    ap.add_argument("--socket", help="listen here (default: the path launchers use)")
    ap.add_argument("--verbose", action="store_true", help="log every request and refusal")
    ap.add_argument("--no-ksm", action="store_true",
                    help="do not offer the server's memory (and so its monitors') to KSM")
    ap.add_argument("--no-snapshot", action="store_true",
                    help="keep the server's memory anonymous: monitors cannot give back "
                         "the pages they copied")
    ap.add_argument("--no-settle", action="store_true",
                    help="leave the code that is not warm by the snapshot counting its calls: "
                         "monitors that run it then copy its pages")
    ap.add_argument("--no-spare", action="store_true",
                    help="fork each monitor when its launcher comes, not one ahead")
    ap.add_argument("--version", action="version", version=f"pymon-server {VERSION}")
    args = ap.parse_args(argv)

    sock = inherited()
    path = None
    if sock is None:
        path = args.socket or default_socket_path(os.environ, os.geteuid())
        if not path:
            say("no socket path: pass --socket, or set XDG_RUNTIME_DIR or PYMON_SOCKET")
            return 2
        path = os.path.abspath(path)
        try:
            sock = bind(path)
        except OSError as e:
            say(f"cannot listen on {path}: {e.strerror or e}")
            return 1

    from pymon.server.warm import warm

    # before serving: not on a launcher's time
    settled = warm(settle_code=not args.no_settle)
    if settled:
        say(f"{settled} code objects settled")
    if not args.no_snapshot:
        from pymon.server import snapshot

        try:
            taken = snapshot.take()
            skipped = f", {taken.skipped} left as they were" if taken.skipped else ""
            mib = taken.copied_pages * snapshot.PAGE >> 20
            say(f"memory snapshot: {mib} MiB in {taken.ranges} mappings{skipped}")
        except OSError as e:
            say(f"no memory snapshot ({e.strerror or e}): monitors keep what they copy")
    if not args.no_ksm:
        from pymon.server import ksm

        marked = ksm.offer_memory()
        if marked:
            say(f"{marked >> 20} MiB offered to KSM, for the monitors' copies; ksmd is "
                f"{'running' if ksm.ksmd_state() == '1' else 'off'} on this host")
    return Server(sock, path, verbose=args.verbose, spares=not args.no_spare).run()


if __name__ == "__main__":
    sys.exit(main())
