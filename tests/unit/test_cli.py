"""argv parsing and validation: conformance items 1-15 of the contract's §13, one test
each, plus the GLib parsing rules podman relies on."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pymon.cli import Options, parse_args, version_text
from pymon.config import build_config, parse_log_path
from pymon.errors import CliError, UsageError

RUNTIME = "/bin/true"
BASE = ["--api-version", "1", "-c", "cid0123456789", "-u", "uuid", "-r", RUNTIME,
        "-l", "k8s-file:/tmp/x.log"]


def parse(argv: list[str]) -> Options:
    result = parse_args(argv)
    assert isinstance(result, Options)
    return result


def run_pymon(*args: str, cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pymon", *args], capture_output=True,
                          text=True, timeout=20, cwd=cwd)


def test_01_version_two_lines_exit_0() -> None:
    res = run_pymon("--version")
    assert res.returncode == 0
    lines = res.stdout.split("\n")
    assert lines[0] == "conmon version 2.2.1"
    assert lines[1].startswith("commit: pymon ")
    assert lines[2:] == [""]
    assert version_text() == res.stdout


def test_02_api_version_with_stray_positional() -> None:
    opts = parse(["--api-version", "1", "-c", "x"])
    assert opts.api_version is True and opts.cid == "x"


def test_03_api_version_with_equals() -> None:
    assert parse(["--api-version=1"]).api_version is True


def test_04_value_beginning_with_dash() -> None:
    opts = parse(["--runtime-arg", "--log", "--runtime-arg", "--log-format=json",
                  "--runtime-opt", "--preserve-fds", "-c", "-weird"])
    assert opts.runtime_args == ("--log", "--log-format=json")
    assert opts.runtime_opts == ("--preserve-fds",)
    assert opts.cid == "-weird"


def test_05_empty_value_kept() -> None:
    opts = parse(["--exit-command-arg", "a", "--exit-command-arg", "", "--exit-command-arg=",
                  "--exit-command-arg", "b"])
    assert opts.exit_command_args == ("a", "", "", "b")


def test_06_unknown_option() -> None:
    with pytest.raises(UsageError, match="^Unknown option --foo$"):
        parse_args(["--foo"])
    res = run_pymon("--foo")
    assert res.returncode == 1
    assert res.stderr == "conmon: option parsing failed: Unknown option --foo\n"


def test_07_missing_cid() -> None:
    with pytest.raises(CliError, match="Container ID not provided. Use --cid"):
        build_config(parse(["-u", "u", "-r", RUNTIME, "-l", "none"]))
    res = run_pymon("-u", "u", "-r", RUNTIME, "-l", "none")
    assert res.returncode == 1
    assert res.stderr == "[conmon:e]: Container ID not provided. Use --cid\n"


def test_08_missing_cuuid_outside_legacy_exec() -> None:
    with pytest.raises(CliError, match="Container UUID not provided. Use --cuuid"):
        build_config(parse(["-c", "c", "-r", RUNTIME, "-l", "none"]))
    with pytest.raises(CliError, match="Container UUID not provided"):
        build_config(parse(["--api-version", "-e", "--exec-process-spec", "p", "-c", "c",
                            "-r", RUNTIME, "-l", "none"]))
    # legacy exec (no --api-version) needs no cuuid
    config = build_config(parse(["-e", "--exec-process-spec", "p", "-c", "c", "-r", RUNTIME,
                                 "-l", "none"]))
    assert config.legacy_exec and config.bundle is None


def test_09_missing_or_non_executable_runtime(tmp_path) -> None:
    with pytest.raises(CliError, match="Runtime path not provided. Use --runtime"):
        build_config(parse(["-c", "c", "-u", "u", "-l", "none"]))
    plain = tmp_path / "not-exec"
    plain.write_text("")
    with pytest.raises(CliError, match=f"Runtime path {plain} is not valid Permission denied"):
        build_config(parse(["-c", "c", "-u", "u", "-r", str(plain), "-l", "none"]))
    missing = tmp_path / "missing"
    res = run_pymon("-c", "c", "-u", "u", "-r", str(missing), "-l", "none")
    assert res.returncode == 1
    assert res.stderr == f"[conmon:e]: Runtime path {missing} is not valid No such file or directory\n"


def test_10_missing_log_path() -> None:
    with pytest.raises(CliError, match="^Log driver not provided. Use --log-path$"):
        build_config(parse(["-c", "c", "-u", "u", "-r", RUNTIME]))


def test_11_unknown_log_driver() -> None:
    with pytest.raises(CliError, match="^No such log driver foo$"):
        build_config(parse(["-c", "c", "-u", "u", "-r", RUNTIME, "-l", "foo:bar"]))


def test_12_k8s_file_without_path() -> None:
    for value in ("k8s-file", "k8s-file:"):
        with pytest.raises(CliError, match="^k8s-file requires a filename$"):
            build_config(parse(["-c", "c", "-u", "u", "-r", RUNTIME, "-l", value]))


def test_13_unknown_log_level() -> None:
    with pytest.raises(CliError, match="^No such log level verbose$"):
        build_config(parse([*BASE, "--log-level", "verbose"]))
    assert build_config(parse([*BASE, "--log-level", "DEBUG"])).log_level == "debug"


def test_14_log_tag_with_only_k8s_file(tmp_path) -> None:
    log = tmp_path / "ctr.log"
    res = run_pymon("-c", "c", "-u", "u", "-r", RUNTIME, "-l", f"k8s-file:{log}",
                    "--log-tag", "t", cwd=str(tmp_path))
    assert res.returncode == 1
    assert res.stderr == "[conmon:e]: k8s-file doesn't support --log-tag\n"
    assert not log.exists(), "a rejected start must not leave a new log file behind"


def test_15_unopenable_log_file_fails_before_start_pipe(tmp_path) -> None:
    # The start pipe is a socketpair whose peer never writes: if pymon read it before
    # failing, this would hang until the timeout.
    import socket

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with ours, theirs:
        env = dict(os.environ, _OCI_STARTPIPE=str(theirs.fileno()))
        res = subprocess.run(
            [sys.executable, "-m", "pymon", "-c", "c", "-u", "u", "-r", RUNTIME,
             "-l", f"k8s-file:{tmp_path}/missing-dir/ctr.log"],
            capture_output=True, text=True, timeout=20, env=env, pass_fds=[theirs.fileno()],
            cwd=str(tmp_path))
    assert res.returncode == 1
    assert res.stderr == "[conmon:e]: Failed to open log file No such file or directory\n"


# --- GLib parsing rules beyond the checklist ---

def test_short_options_glued_and_bundled() -> None:
    opts = parse(["-cABC", "-ti", "-T", "5", "-l", "none"])
    assert opts.cid == "ABC" and opts.terminal and opts.stdin and opts.timeout == 5


def test_last_string_wins_and_arrays_accumulate() -> None:
    opts = parse(["-c", "a", "--cid=b", "-l", "none", "--log-path", "journald"])
    assert opts.cid == "b" and opts.log_paths == ("none", "journald")


def test_restore_arg_shares_runtime_opt() -> None:
    assert parse(["--runtime-opt", "a", "--restore-arg", "b"]).runtime_opts == ("a", "b")


def test_integer_values_use_c_rules() -> None:
    assert parse(["-T", "0x10"]).timeout == 16
    assert parse(["-T", "010"]).timeout == 8
    assert parse(["--log-size-max", "-1"]).log_size_max == -1
    assert parse(["--log-size-max", "9223372036854775807"]).log_size_max == 2**63 - 1
    with pytest.raises(UsageError, match="Cannot parse integer value \u201cabc\u201d for --timeout"):
        parse_args(["--timeout", "abc"])
    with pytest.raises(UsageError, match="out of range"):
        parse_args(["-T", "4294967296"])


def test_missing_argument() -> None:
    with pytest.raises(UsageError, match="^Missing argument for --cid$"):
        parse_args(["--cid"])


def test_double_dash_ends_options() -> None:
    assert parse(["-c", "a", "--", "--foo"]).cid == "a"


def test_help_lists_every_visible_option() -> None:
    res = run_pymon("--help")
    assert res.returncode == 0
    from pymon.cli import OPTIONS

    for long, _, _, _, text in OPTIONS:
        if text:
            assert f"--{long}" in res.stdout
    assert "journald" in res.stdout and "--exec" in res.stdout


@pytest.mark.parametrize("value, expected", [
    (":journald", ("k8s-file", "journald")),
    ("none", ("none", None)), ("off:x", ("none", None)), ("null", ("none", None)),
    ("journald", ("journald", None)), ("journald:x", ("journald", None)),
    ("passthrough", ("passthrough", None)),
    ("/var/log/x.log", ("k8s-file", "/var/log/x.log")),
    ("k8s-file:/a:b", ("k8s-file", "/a:b")),
])
def test_log_path_rules(value: str, expected: tuple[str, str | None]) -> None:
    assert parse_log_path(value) == expected


@pytest.mark.parametrize("value", ["", ":"])
def test_empty_log_path(value: str) -> None:
    with pytest.raises(CliError, match="log-path must not be empty"):
        parse_log_path(value)


def test_defaults_from_cwd(tmp_path) -> None:
    config = build_config(parse(["-c", "c", "-u", "u", "-r", RUNTIME, "-l", "none"]),
                          cwd=str(tmp_path))
    assert config.bundle == str(tmp_path)
    assert config.container_pidfile == f"{tmp_path}/pidfile-c"


@pytest.mark.parametrize("args, message", [
    (["--restore", "d", "-e", "--exec-process-spec", "p"],
     "Cannot use 'exec' and 'restore' at the same time"),
    (["--exec-attach"], "Attach can only be specified with exec"),
    (["-e", "--exec-attach", "--exec-process-spec", "p"],
     "Attach can only be specified for a non-legacy exec session"),
    (["--api-version", "-e"], "Exec process spec path not provided. Use --exec-process-spec"),
    (["--exit-delay", "-1"], "Delay before invoking exit command must be greater than or equal to 0"),
    (["--log-max-files", "-1"], "log-max-files must be non-negative, got -1"),
    (["--log-rotate", "--log-max-files", "0"], "log-max-files must be at least 1"),
])
def test_validation_messages(args: list[str], message: str) -> None:
    with pytest.raises(CliError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_config(parse(["-c", "c", "-u", "u", "-r", RUNTIME, "-l", "none", *args]))
