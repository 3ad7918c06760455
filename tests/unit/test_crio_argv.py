"""Argv conformance with CRI-O 1.26.4: every monitor invocation shape the rig recorded
(data/crio-1.26.4-argv.tsv) through the parser and validation, checked field by field,
plus the runtime command and the sync message key each shape leads to."""

from __future__ import annotations

from pathlib import Path

import pytest

from pymon import sync
from pymon.cli import Options, parse_args
from pymon.config import Config, build_config
from pymon.runtime import runtime_argv

DATA = Path(__file__).parent / "data" / "crio-1.26.4-argv.tsv"
RUNC = "/usr/sbin/runc"
# build_config checks that the runtime is executable; this test must not need runc
RUNTIME_STANDIN = "/bin/sh"


def shapes() -> dict[str, list[str]]:
    out = {}
    for line in DATA.read_text().splitlines():
        if line.startswith("#") or not line:
            continue
        shape, env, argv = line.split("\t")
        assert shape not in out
        if shape != "version":  # every monitor gets the sync and start pipes at 3 and 4
            assert env == "_OCI_SYNCPIPE=3 _OCI_STARTPIPE=4"
        out[shape] = argv.split(" ")
    return out


SHAPES = shapes()


def value(argv: list[str], opt: str) -> str:
    return argv[argv.index(opt) + 1]


def config_for(argv: list[str]) -> Config:
    parsed = parse_args(argv)
    assert isinstance(parsed, Options)
    assert parsed.runtime == RUNC
    standin = [RUNTIME_STANDIN if a == RUNC else a for a in argv]
    opts = parse_args(standin)
    assert isinstance(opts, Options)
    return build_config(opts, cwd="/crio-cwd")


def test_every_recorded_shape_is_covered() -> None:
    assert set(SHAPES) == {"version", "create-infra", "create", "create-tty", "create-stdin",
                           "execsync", "execsync-timeout"}


def test_version_probe() -> None:
    opts = parse_args(SHAPES["version"])
    assert isinstance(opts, Options) and opts.version


@pytest.mark.parametrize("shape", ["create-infra", "create", "create-tty", "create-stdin"])
def test_create(shape: str) -> None:
    argv = SHAPES[shape]
    config = config_for(argv)
    opts = config.opts
    cid = value(argv, "-c")
    assert len(cid) == 64 and config.cid == cid and opts.cuuid == cid
    assert config.bundle == value(argv, "-b")
    assert config.container_pidfile == value(argv, "-p")
    assert opts.conmon_pidfile == value(argv, "-P") == config.bundle + "/conmon-pidfile"
    assert opts.exit_dir == value(argv, "--exit-dir")
    assert opts.persist_dir == value(argv, "--persist-dir")
    assert opts.socket_dir_path == value(argv, "--socket-dir-path")
    assert opts.name == value(argv, "-n") and opts.name.startswith("k8s_")
    assert opts.syslog and config.log_level == "info"
    # -l without a driver prefix: a k8s-file at that path
    assert (config.logs.k8s_path, config.logs.journald, config.logs.passthrough) == (
        value(argv, "-l"), False, False)
    assert opts.runtime_args == (value(argv, "--runtime-arg"),)
    assert opts.runtime_args[0].startswith("--root=")
    assert not opts.exec and not opts.sync and opts.timeout is None
    assert opts.terminal == (shape == "create-tty")
    assert opts.stdin == opts.leave_stdin_open == (shape == "create-stdin")
    assert not opts.full_attach  # the attach socket goes under --socket-dir-path
    # no --api-version: legacy sync messages, {"pid": N}
    assert config.api_version == 0 and not config.legacy_exec
    assert sync.message_key(config.api_version, opts.exec) == "pid"
    assert runtime_argv(config, "/console.sock" if opts.terminal else None) == [
        RUNTIME_STANDIN, opts.runtime_args[0], "create", "--bundle", config.bundle,
        "--pid-file", config.container_pidfile,
        *(["--console-socket", "/console.sock"] if opts.terminal else []), cid]


@pytest.mark.parametrize("shape", ["execsync", "execsync-timeout"])
def test_execsync(shape: str) -> None:
    argv = SHAPES[shape]
    config = config_for(argv)
    opts = config.opts
    cid = value(argv, "-c")
    assert config.cid == cid and opts.cuuid is None  # no -u for an exec
    assert opts.exec and opts.sync and not opts.exec_attach and not opts.terminal
    assert opts.exec_process_spec == value(argv, "--exec-process-spec")
    assert config.bundle is None and opts.conmon_pidfile is None and opts.exit_dir is None
    assert config.container_pidfile == value(argv, "-p")
    assert config.logs.k8s_path == value(argv, "-l")
    assert opts.log_global_size_max == 16777216 and opts.log_size_max == -1
    assert opts.timeout == (2 if shape == "execsync-timeout" else None)
    assert not opts.syslog and config.log_level == "info"
    # legacy exec: no pid message, then {"exit_code": N}
    assert config.legacy_exec and sync.message_key(config.api_version, True) == "exit_code"
    assert runtime_argv(config) == [
        RUNTIME_STANDIN, value(argv, "--runtime-arg"), "exec", "--pid-file",
        config.container_pidfile, "--process", opts.exec_process_spec, "--detach", cid]
