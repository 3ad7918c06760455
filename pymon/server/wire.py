"""The server's side of the request format (pymon/handover.py): a typed, validated struct.

msgspec decodes the launcher's MessagePack into `Request` and checks every field's type
and bounds in one pass; anything else (garbage, a truncated message, a wrong type, a
negative fd, an absurd rlimit) is a `Rejected` with the reason, and the launcher runs cold.
Pure: no fd is touched here, so it is unit-tested without root.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from pymon.handover import MAX_FDS, PROTOCOL, RLIMIT_COUNT

_FdNumber = Annotated[int, msgspec.Meta(ge=0, le=1 << 20)]
_Limit = Annotated[int, msgspec.Meta(ge=-1)]  # -1: RLIM_INFINITY
_Mask = int  # a 64-bit signal set, sent signed: read it with `& MASK64`
MASK64 = (1 << 64) - 1


class Rlimit(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    resource: Annotated[int, msgspec.Meta(ge=0, lt=RLIMIT_COUNT)]
    soft: _Limit
    hard: _Limit


class Request(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    protocol: int
    version: Annotated[str, msgspec.Meta(max_length=256)]
    pid: Annotated[int, msgspec.Meta(gt=0)]
    argv: Annotated[list[bytes], msgspec.Meta(min_length=1, max_length=4096)]
    env: Annotated[list[bytes], msgspec.Meta(max_length=16384)]
    cwd: Annotated[bytes, msgspec.Meta(max_length=4096)]
    umask: Annotated[int, msgspec.Meta(ge=0, le=0o777)]
    fds: Annotated[list[_FdNumber], msgspec.Meta(max_length=MAX_FDS)]
    rlimits: Annotated[list[Rlimit], msgspec.Meta(max_length=64)]
    oom_score_adj: Annotated[int, msgspec.Meta(ge=-1000, le=1000)]
    sig_blocked: _Mask
    sig_ignored: _Mask
    nice: Annotated[int, msgspec.Meta(ge=-20, le=19)]


class Rejected(Exception):
    """A request the server will not serve; the text goes back to the launcher."""


_decoder = msgspec.msgpack.Decoder(Request)


def decode_request(data: bytes, received_fds: int) -> Request:
    """Decode and check one request; `received_fds` is how many fds came with it."""
    try:
        req = _decoder.decode(data)
    except msgspec.DecodeError as e:
        raise Rejected(f"malformed request: {e}") from None
    if req.protocol != PROTOCOL:
        raise Rejected(f"protocol {req.protocol}, server speaks {PROTOCOL}")
    if len(req.fds) != received_fds:
        raise Rejected(f"request names {len(req.fds)} fds but {received_fds} came with it")
    if len(set(req.fds)) != len(req.fds):
        raise Rejected("an fd number appears twice")
    if not req.cwd.startswith(b"/") or b"\0" in req.cwd:
        raise Rejected("cwd is not an absolute path")
    for item in (*req.argv, *req.env):
        if b"\0" in item:
            raise Rejected("NUL byte in argv or environment")
    for entry in req.env:
        if b"=" not in entry[1:]:
            raise Rejected("environment entry without '='")
    for lim in req.rlimits:
        if lim.hard != -1 and (lim.soft == -1 or lim.soft > lim.hard):
            raise Rejected(f"rlimit {lim.resource}: soft limit above hard limit")
    return req
