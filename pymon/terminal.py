"""The container's pty master (terminal mode, §11): output flags and window size."""

from __future__ import annotations

import fcntl
import struct
import termios

from pymon.diag import log


def set_onlcr(master: int) -> None:
    """Add ONLCR to the output flags, as conmon does; no raw mode, no initial size."""
    try:
        attrs = termios.tcgetattr(master)
        attrs[1] |= termios.ONLCR
        termios.tcsetattr(master, termios.TCSANOW, attrs)
    except termios.error as e:
        log.warning("failed to set ONLCR on the console: %s", e)


def resize(master: int, rows: int, cols: int) -> None:
    try:
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    except OSError as e:
        log.warning("failed to resize the console to %dx%d: %s", rows, cols, e.strerror)
