"""k8s-file framing (contract §5.2): pure functions on bytes, no fds.

A chunk (one read) becomes records `TS STREAM F|P CONTENT`, one timestamp per chunk. The
whole-buffer path uses bytes.replace so the per-line work runs in C, not in a Python loop;
it returns a list of buffers for os.writev so the chunk itself is never copied into a joined
string. The per-record path (`records`) is used only when a size cap falls inside a chunk.
"""

from __future__ import annotations

import time

STDOUT = b"stdout"
STDERR = b"stderr"

_cached_second: int = -1
_cached_prefix: bytes = b""
_cached_offset: bytes = b""


def timestamp(now_ns: int | None = None) -> bytes:
    """`YYYY-MM-DDTHH:MM:SS.NNNNNNNNN+HH:MM` in local time (TZ honoured), 9 digits always,
    a numeric offset (never Z), offset seconds dropped, the year not zero-padded."""
    global _cached_second, _cached_prefix, _cached_offset
    if now_ns is None:
        now_ns = time.time_ns()
    sec, frac = divmod(now_ns, 1_000_000_000)
    if sec != _cached_second:
        tm = time.localtime(sec)
        off = tm.tm_gmtoff // 60
        sign = "-" if off < 0 else "+"
        off = abs(off)
        _cached_prefix = (f"{tm.tm_year}-{tm.tm_mon:02d}-{tm.tm_mday:02d}"
                          f"T{tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d}.").encode()
        _cached_offset = f"{sign}{off // 60:02d}:{off % 60:02d}".encode()
        _cached_second = sec
    return b"%s%09d%s" % (_cached_prefix, frac, _cached_offset)


def reset_timestamp_cache() -> None:
    """Forget the cached second (tests that change TZ call this)."""
    global _cached_second
    _cached_second = -1


def frame(chunk: bytes, stream: bytes, ts: bytes) -> tuple[list[bytes], int]:
    """All records of one chunk as writev buffers, and their total size in bytes."""
    full = b"%s %s F " % (ts, stream)
    last = chunk.rfind(b"\n")
    if last < 0:
        bufs = [b"%s %s P " % (ts, stream), chunk, b"\n"]
        return bufs, len(bufs[0]) + len(chunk) + 1
    body = chunk[:last].replace(b"\n", b"\n" + full) if last else b""
    bufs = [full, body, b"\n"]
    size = len(full) + len(body) + 1
    if last + 1 < len(chunk):
        partial = b"%s %s P " % (ts, stream)
        tail = chunk[last + 1:]
        bufs += [partial, tail, b"\n"]
        size += len(partial) + len(tail) + 1
    return bufs, size


def records(chunk: bytes, stream: bytes, ts: bytes) -> list[bytes]:
    """The same records as `frame`, one bytes object each (slow path, for cap boundaries)."""
    full = b"%s %s F " % (ts, stream)
    out: list[bytes] = []
    start = 0
    n = len(chunk)
    while start < n:
        nl = chunk.find(b"\n", start)
        if nl < 0:
            out.append(b"%s %s P %s\n" % (ts, stream, chunk[start:]))
            break
        out.append(full + chunk[start:nl + 1])
        start = nl + 1
    return out


FLAG_OFFSET = 43  # `TS` (35 bytes, fixed width) + " stdout " / " stderr "


class Cut:
    """What a write of whole records that stopped after `written` bytes left behind
    (see `cut`). A plain slotted class: typing's NamedTuple costs ~8 ms of start-up."""

    __slots__ = ("dropped_bytes", "dropped_lines", "dropped_records", "head", "line", "rest")

    def __init__(self, rest: bytes, head: int, line: bool, dropped_records: int,
                 dropped_lines: int, dropped_bytes: int) -> None:
        self.rest = rest  # the unwritten end of the record that was cut (b"": none was)
        self.head = head  # bytes of that record already in the file
        self.line = line  # that record is an F record (it ends a line)
        self.dropped_records = dropped_records  # whole records after it, never written
        self.dropped_lines = dropped_lines  # of those, the F records (one per lost line end)
        self.dropped_bytes = dropped_bytes

    def __repr__(self) -> str:
        return (f"Cut(rest={self.rest!r}, head={self.head}, line={self.line}, "
                f"records={self.dropped_records}, "
                f"lines={self.dropped_lines}, bytes={self.dropped_bytes})")


def cut(data: bytes, written: int) -> Cut:
    """`data` (whole records, each ending in a newline) was written up to `written` bytes
    when the file refused more (ENOSPC, EFBIG, EIO). A record cut there must not be left
    open: whatever is written next would be glued onto it. The caller completes it with
    `rest` before anything else, or, if that never succeeds, truncates the file by `head`
    bytes back to the last record boundary. The records after it are lost; they are
    counted, for the diagnostic, rather than kept: the container must not wait on a full
    disk."""
    written = max(0, min(written, len(data)))
    start = data.rfind(b"\n", 0, written) + 1  # where the record holding the cut begins
    if start == written:
        end = written  # the cut fell on a record boundary
    else:
        end = data.index(b"\n", written) + 1
    tail = data[end:]
    records = tail.split(b"\n")[:-1]
    lines = sum(1 for r in records if r[FLAG_OFFSET:FLAG_OFFSET + 1] == b"F")
    line = end > written and data[start + FLAG_OFFSET:start + FLAG_OFFSET + 1] == b"F"
    return Cut(data[written:end], written - start, line, len(records), lines, len(tail))
