"""Options -> validated Config, in conmon's validation order (contract §1.5).

Pure apart from two look-ups conmon also makes here: access(runtime, X_OK) and getcwd().
Opening the k8s log file (step 12) is the launcher's job; `check_log_rules` (step 13) runs
after it so that two errors at once are reported in conmon's order.
"""

from __future__ import annotations

import os
import stat  # already loaded by os.path: free on the start-up path

from pymon.cli import LOG_LEVELS, Frozen, Options
from pymon.errors import CliError

TRUNC_ID_LEN = 12
_LABEL_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


class LogSpec(Frozen):
    """Which log drivers are on. `k8s_path` is None when k8s-file is off."""

    __slots__ = ("k8s_path", "journald", "passthrough")
    k8s_path: str | None
    journald: bool
    passthrough: bool

    def __init__(self, k8s_path: str | None, journald: bool, passthrough: bool) -> None:
        self._init({"k8s_path": k8s_path, "journald": journald, "passthrough": passthrough})


class Config(Frozen):
    """Everything the launcher and the monitor need, with conmon's defaults filled in."""

    __slots__ = ("opts", "cwd", "bundle", "container_pidfile", "logs", "api_version",
                 "log_level")
    opts: Options
    cwd: str
    bundle: str | None
    container_pidfile: str
    logs: LogSpec
    api_version: int
    log_level: str

    def __init__(self, **values: object) -> None:
        self._init(values)

    # The most used raw options, named for readability at the call sites.
    @property
    def cid(self) -> str:
        return self.opts.cid or ""

    @property
    def is_exec(self) -> bool:
        return self.opts.exec

    @property
    def legacy_exec(self) -> bool:
        return self.opts.exec and self.api_version == 0


def parse_log_path(value: str) -> tuple[str, str | None]:
    """One -l value -> (driver, path). Splits on the first ':' only, so a path may hold ':'
    (conmon keeps only the second ':'-separated token; podman's paths never hold one)."""
    driver, colon, path = value.partition(":")
    if not driver and not path:
        raise CliError("log-path must not be empty")
    if not driver:  # ":PATH" is a k8s file named PATH; ":journald" is a file called journald
        return "k8s-file", path
    if driver in ("off", "null", "none"):
        return "none", None
    if driver == "passthrough":
        return "passthrough", None
    if driver == "journald":
        return "journald", None
    if driver == "k8s-file":
        if not path:
            raise CliError("k8s-file requires a filename")
        return "k8s-file", path
    if not colon:
        return "k8s-file", driver  # a bare path
    raise CliError(f"No such log driver {driver}")


def parse_log_specs(values: tuple[str, ...]) -> LogSpec:
    if not values:
        raise CliError("Log driver not provided. Use --log-path")
    k8s: str | None = None
    journald = passthrough = False
    for value in values:
        driver, path = parse_log_path(value)
        if driver == "k8s-file":
            k8s = path  # the last k8s path wins
        elif driver == "journald":
            journald = True
        elif driver == "passthrough":
            passthrough = True
    return LogSpec(k8s, journald, passthrough)


def build_config(opts: Options, cwd: str | None = None) -> Config:
    """Validate `opts` (steps 2-12 of §1.5, without opening files) and derive defaults."""
    if opts.log_max_files < 0:
        raise CliError(f"log-max-files must be non-negative, got {opts.log_max_files}")
    if opts.log_rotate and opts.log_max_files == 0:
        raise CliError("log-max-files must be at least 1 when log-rotate is enabled, got 0")
    if opts.cid is None:
        raise CliError("Container ID not provided. Use --cid")
    level = (opts.log_level or "warning").lower()
    if level not in LOG_LEVELS:
        raise CliError(f"No such log level {opts.log_level}")
    if opts.restore is not None and opts.exec:
        raise CliError("Cannot use 'exec' and 'restore' at the same time")
    if opts.exec_attach and not opts.exec:
        raise CliError("Attach can only be specified with exec")
    if opts.exec_attach and not opts.api_version:
        raise CliError("Attach can only be specified for a non-legacy exec session")
    if opts.cuuid is None and (not opts.exec or opts.api_version):
        raise CliError("Container UUID not provided. Use --cuuid")
    if opts.runtime is None:
        raise CliError("Runtime path not provided. Use --runtime")
    # access(X_OK) only, as conmon: a directory passes here (conmon's tests rely on it)
    # and fails later as an exec error that reaches the engine on the sync pipe.
    if not os.access(opts.runtime, os.X_OK):
        raise CliError(f"Runtime path {opts.runtime} is not valid {_strerror_access(opts.runtime)}")
    if opts.exec and opts.exec_process_spec is None:
        raise CliError("Exec process spec path not provided. Use --exec-process-spec")
    if opts.seccomp_notify_socket is not None or opts.seccomp_notify_plugins is not None:
        raise CliError("seccomp notify (--seccomp-notify-socket) is not supported by pymon")
    if cwd is None:
        try:
            cwd = os.getcwd()
        except OSError:
            raise CliError("Failed to get working directory") from None
    bundle = opts.bundle
    if bundle is None and not opts.exec:
        bundle = cwd
    if opts.timeout is not None and opts.timeout <= 0:
        # conmon takes these as "no timeout"; no engine passes them (CRI-O adds -T only
        # for a positive timeout), so they are a caller's mistake: say so.
        raise CliError(f"Timeout must be a positive number of seconds, got {opts.timeout}")
    if opts.exit_delay < 0:
        raise CliError("Delay before invoking exit command must be greater than or equal to 0")
    pidfile = opts.container_pidfile or f"{cwd}/pidfile-{opts.cid}"
    logs = parse_log_specs(opts.log_paths)
    return Config(opts=opts, cwd=cwd, bundle=bundle, container_pidfile=pidfile, logs=logs,
                  api_version=1 if opts.api_version else 0, log_level=level)


def check_exec_spec(path: str) -> None:
    """The exec process spec must be a readable file. Its JSON is left to the runtime,
    whose error reaches the engine on the sync pipe (parsing it here would put the json
    import, ~7 ms, on every exec's start-up path)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise CliError(f"Exec process spec {path}: {e.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise CliError(f"Exec process spec {path} is not a regular file")
    finally:
        os.close(fd)


def explain_bad_exec_spec(path: str, runtime_error: bytes | str) -> bytes | str:
    """After a failed exec only (json's import is too slow for the start-up path): if
    the spec is not a JSON object, say so, naming the file, before the runtime's text."""
    import json

    try:
        with open(path, "rb") as f:
            spec = json.loads(f.read())
    except (OSError, ValueError) as e:
        problem = str(e)
    else:
        if isinstance(spec, dict):
            return runtime_error
        problem = "not a JSON object"
    if isinstance(runtime_error, bytes):
        runtime_error = runtime_error.decode("utf-8", errors="replace")
    return f"Exec process spec {path} is not valid: {problem}; runtime: {runtime_error}"


def check_log_rules(config: Config) -> None:
    """Step 13 of §1.5: tag/label/cid rules, after the k8s log file has been opened."""
    opts, logs = config.opts, config.logs
    if logs.k8s_path is not None and not logs.journald:
        if opts.log_tag is not None:
            raise CliError("k8s-file doesn't support --log-tag")
        if opts.log_labels:
            raise CliError("k8s-file doesn't support --log-label")
    if logs.journald:
        if len(config.cid) <= TRUNC_ID_LEN:
            raise CliError("Container ID must be longer than 12 characters")
        for label in opts.log_labels:
            if label.startswith("="):
                raise CliError("Container labels must be in format LABEL=VALUE "
                               f"(no LABEL present in '{label}')")
            if label.count("=") != 1:
                raise CliError("Container labels must be in format LABEL=VALUE "
                               f"(none or more than one '=' present in '{label}')")
            if not set(label.partition("=")[0]) <= _LABEL_NAME_CHARS:
                raise CliError("Container label names must contain only uppercase letters, "
                               f"numbers and underscore (in '{label}')")


def _strerror_access(path: str) -> str:
    try:
        os.stat(path)
    except OSError as e:
        return e.strerror or "Permission denied"
    return "Permission denied"
