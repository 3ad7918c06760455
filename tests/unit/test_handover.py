"""The hand-over wire format: what launchers write, what the server accepts or refuses."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pymon import handover
from pymon.server.wire import MASK64, Rejected, decode_request


def request(**over: object) -> bytes:
    values: dict[str, object] = {
        "version": "0.1.0", "pid": 1234, "argv": [b"/usr/bin/pymon", b"-c", b"x"],
        "env": [b"PATH=/bin", b"_OCI_SYNCPIPE=3"], "cwd": b"/tmp", "umask": 0o022,
        "fds": [0, 1, 2, 3], "rlimits": [(7, 1024, 524288), (0, -1, -1)], "oom_score_adj": 0,
        "sig_blocked": 0, "sig_ignored": 1 << 12, "nice": 0}
    values.update(over)
    return handover.encode_request(**values)  # type: ignore[arg-type]


def test_request_round_trip() -> None:
    req = decode_request(request(), 4)
    assert req.argv == [b"/usr/bin/pymon", b"-c", b"x"]
    assert req.env == [b"PATH=/bin", b"_OCI_SYNCPIPE=3"]
    assert (req.cwd, req.umask, req.fds, req.pid) == (b"/tmp", 0o022, [0, 1, 2, 3], 1234)
    assert [(r.resource, r.soft, r.hard) for r in req.rlimits] == [(7, 1024, 524288), (0, -1, -1)]
    assert req.sig_ignored & MASK64 == 1 << 12


def test_signal_masks_keep_all_64_bits() -> None:
    req = decode_request(request(sig_blocked=(1 << 64) - 1, sig_ignored=1 << 63), 4)
    assert req.sig_blocked & MASK64 == (1 << 64) - 1
    assert req.sig_ignored & MASK64 == 1 << 63


@pytest.mark.parametrize("data, why", [
    (b"", "malformed"),
    (b"\x93\x01\x02", "malformed"),
    (b"garbage" * 10, "malformed"),
    (request()[:-3], "malformed"),  # truncated
    (msgspec.msgpack.encode([handover.PROTOCOL + 1, "0.1.0", 1, [b"x"], [], b"/", 0, [], [],
                             0, 0, 0, 0]), f"protocol {handover.PROTOCOL + 1}"),
    (request(pid=0), "malformed"),
    (request(fds=[0, 1, -1, 3]), "malformed"),
    (request(fds=[0, 1, 1, 3]), "twice"),
    (request(cwd=b"relative"), "absolute"),
    (request(argv=[]), "malformed"),
    (request(argv=[b"a\0b"]), "NUL"),
    (request(env=[b"NOEQUALS"]), "without '='"),
    (request(env=[b"=x"]), "without '='"),
    (request(rlimits=[(99, 1, 1)]), "malformed"),
    (request(rlimits=[(7, 10, 5)]), "soft limit above"),
    (request(rlimits=[(7, -1, 5)]), "soft limit above"),
    (request(umask=0o1777), "malformed"),
    (request(oom_score_adj=5000), "malformed"),
])
def test_bad_requests_are_rejected_with_a_reason(data: bytes, why: str) -> None:
    with pytest.raises(Rejected, match=why):
        decode_request(data, 4)


def test_fd_count_must_match_what_came() -> None:
    with pytest.raises(Rejected, match="names 4 fds but 3 came"):
        decode_request(request(), 3)


@given(st.binary(max_size=300))
def test_no_input_escapes_as_another_exception(data: bytes) -> None:
    try:
        decode_request(data, 0)
    except Rejected:
        pass


@given(st.sampled_from([handover.REFUSED, handover.DETACHED,
                        handover.RUNNING, handover.EXITED]),
       st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1), st.text(max_size=100))
def test_reply_round_trip(kind: str, value: int, text: str) -> None:
    assert handover.decode_reply(handover.encode_reply(kind, value, text)) == (kind, value, text)


def test_replies_decoded_by_msgspec_too() -> None:
    """The launcher's hand-written reader agrees with a real MessagePack encoder."""
    for value in (0, 5, 127, 128, -1, -32, -33, 70000, 1 << 40, -(1 << 40)):
        data = msgspec.msgpack.encode(["detached", value, "/run/x.pid"])
        assert handover.decode_reply(data) == ("detached", value, "/run/x.pid")


@pytest.mark.parametrize("data", [b"", b"\x93", b"\x92\xa1x\x00", b"\x93\xa1x\x00\xa1yz",
                                  b"\x93\xa1x\xc0\xa0", b"\x93\xa1x\x00\xa0extra"])
def test_malformed_replies(data: bytes) -> None:
    with pytest.raises(ValueError):
        handover.decode_reply(data)


def test_socket_path_defaults() -> None:
    assert handover.default_socket_path({}, 0) == "/run/pymon/server.sock"
    assert handover.default_socket_path({"XDG_RUNTIME_DIR": "/run/user/1000"}, 1000) == \
        "/run/user/1000/pymon/server.sock"
    assert handover.default_socket_path({}, 1000) is None
    assert handover.default_socket_path({"PYMON_SOCKET": "/x.sock"}, 1000) == "/x.sock"
    assert handover.default_socket_path({"PYMON_SOCKET": ""}, 0) is None


def test_invocation_is_frozen() -> None:
    inv = handover.Invocation(("-c", "x"), {}, "/", 0o022, (3,))
    with pytest.raises(AttributeError):
        inv.cwd = "/tmp"  # type: ignore[misc]
