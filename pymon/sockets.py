"""Sockets made on the launch path: the attach listener (§6.1) and the console socket (§11).

Built on `_socket`, the C module under `socket`: the public module imports enum and
selectors (~5 ms) and this code runs before the runtime is spawned. Everything returned
is a plain fd number, CLOEXEC; the monitor wraps them once trio is up.
"""

from __future__ import annotations

import _socket
import os
import sys

SUN_PATH_MAX = 107  # sizeof(sun_path) - 1
ATTACH_BACKLOG = 10
CONSOLE_BACKLOG = 128


class AttachListener:
    """The listening attach socket and what must be removed at exit."""

    __slots__ = ("fd", "path", "symlink")

    def __init__(self, fd: int, path: str, symlink: str | None) -> None:
        self.fd, self.path, self.symlink = fd, path, symlink


def attach_symlink_base(socket_dir: str, cuuid: str) -> str:
    """`<socket-dir>/<cuuid>`, shortened by one byte when it is exactly 107 bytes long, as
    conmon does (a socket path of 107 bytes plus "/attach" never fitted anyway)."""
    base = os.path.join(socket_dir, cuuid)
    if len(base.encode()) == SUN_PATH_MAX:
        base = base[:-1]
    return base


def create_attach_listener(bundle: str, full_attach: bool, socket_dir: str,
                           cuuid: str | None) -> AttachListener:
    """SOCK_SEQPACKET listener at `<bundle>/attach`, bound through /proc/self/fd/<dirfd> so
    that bundle paths longer than sun_path work; mode 0700; with `--full-attach` clients use
    that path, otherwise `<socket-dir>/<cuuid>` is a symlink to the bundle."""
    symlink = None
    if not full_attach:
        base = attach_symlink_base(socket_dir, cuuid or "")
        try:
            os.unlink(base)
        except FileNotFoundError:
            pass
        os.symlink(bundle, base)
        symlink = base
    path = os.path.join(bundle, "attach")
    fd = bind_in_dir(bundle, "attach", _socket.SOCK_SEQPACKET, 0o700, ATTACH_BACKLOG)
    return AttachListener(fd, path, symlink)


def bind_in_dir(directory: str, name: str, kind: int, mode: int, backlog: int | None) -> int:
    """A non-blocking AF_UNIX socket bound at `directory/name` (a stale file there is
    replaced), through /proc/self/fd/<dirfd> so that directories deeper than sun_path
    allows work. Returns the fd (CLOEXEC)."""
    dirfd = os.open(directory, os.O_PATH | os.O_CLOEXEC)
    try:
        try:
            os.unlink(name, dir_fd=dirfd)
        except FileNotFoundError:
            pass
        sock = _socket.socket(_socket.AF_UNIX, kind | _socket.SOCK_NONBLOCK | _socket.SOCK_CLOEXEC)
        try:
            os.fchmod(sock.fileno(), mode)
            sock.bind(f"/proc/self/fd/{dirfd}/{name}")
            os.chmod(f"/proc/self/fd/{dirfd}/{name}", mode)
            if backlog is not None:
                sock.listen(backlog)
        except BaseException:
            sock.close()
            raise
    finally:
        os.close(dirfd)
    return sock.detach()


class ConsoleSocket:
    """The socket the runtime connects to (`--console-socket`) to hand over the pty master."""

    __slots__ = ("sock", "path")

    def __init__(self, sock: _socket.socket, path: str) -> None:
        self.sock, self.path = sock, path

    @classmethod
    def create(cls, tmpdir: str | None = None) -> ConsoleSocket:
        directory = tmpdir or os.environ.get("TMPDIR") or "/tmp"
        for _ in range(100):
            name = "conmon-term." + os.urandom(6).hex()[:6]
            path = os.path.join(directory, name)[:SUN_PATH_MAX]
            sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
            try:
                sock.bind(path)
            except FileExistsError:
                sock.close()
                continue
            except OSError as e:
                sock.close()
                if e.errno == 98:  # EADDRINUSE
                    continue
                raise
            sock.listen(CONSOLE_BACKLOG)
            return cls(sock, path)
        raise FileExistsError(f"no free console socket name in {directory}")

    def fileno(self) -> int:
        return self.sock.fileno()

    def receive_master(self) -> int:
        """Accept the runtime's one connection and take the fd it sends (SCM_RIGHTS)."""
        self.sock.setblocking(True)
        conn_fd, _ = self.sock._accept()  # type: ignore[attr-defined]  # _socket's accept
        conn = _socket.socket(fileno=conn_fd)
        try:
            self.remove()
            _, ancdata, _, _ = conn.recvmsg(4095, _socket.CMSG_SPACE(4 * 8),
                                            _socket.MSG_CMSG_CLOEXEC)
        finally:
            conn.close()
        fds = [int.from_bytes(data[i:i + 4], sys.byteorder)
               for level, kind, data in ancdata
               if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS
               for i in range(0, len(data) - len(data) % 4, 4)]
        if len(fds) == 1:
            return fds[0]
        for fd in fds:  # exactly one fd is the protocol; never keep strays
            os.close(fd)
        raise OSError("Failed to receive console file descriptor")

    def remove(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        self.sock.close()


def create_notify_socket(bundle: str) -> int:
    """The container side of the sd-notify proxy: `<bundle>/notify/notify.sock`, a
    datagram socket anyone may write (0777). The engine made `notify/` and mounts it into
    the container. Bound through /proc/self/fd like the attach socket (long paths)."""
    return bind_in_dir(os.path.join(bundle, "notify"), "notify.sock", _socket.SOCK_DGRAM, 0o777,
                       None)
