"""conmon-compatible command line -> frozen Config.

This module is on the start-up path (before the runtime is spawned), so it imports only
what a bare interpreter already has loaded. That rules out argparse (it also rejects values
that begin with "-", which podman passes), msgspec and dataclasses (8-13 ms of imports each,
measured with -X importtime); Config is therefore a small hand-written frozen class.

Parsing follows GLib's GOption as conmon 2.2.1 uses it (contract §1.1):
long options take "--opt value" or "--opt=value"; short options "-c value" or "-cvalue";
flag letters can be bundled ("-ti"); values may begin with "-" and may be empty; string
options keep the last value, array options accumulate; positional words (podman's stray "1"
after --api-version) are ignored; "--" ends option parsing.
"""

from __future__ import annotations

from pymon.errors import UsageError

VERSION = "0.1.0"
# podman <= 4.3 requires "conmon version X.Y.Z" with X.Y.Z >= 2.0.1 on the first line and
# otherwise silently falls back to another conmon; we claim the conmon release whose
# interface we implement.
CONMON_COMPAT_VERSION = "2.2.1"

# kinds of option values
FLAG, STRING, ARRAY, INT, INT64 = "flag", "string", "array", "int", "int64"

# (long name, short letter or "", kind, attribute, help). Order is conmon's --help order.
OPTIONS: tuple[tuple[str, str, str, str, str], ...] = (
    ("api-version", "", FLAG, "api_version", "Conmon API version to use"),
    ("bundle", "b", STRING, "bundle", "Location of the OCI Bundle path"),
    ("cid", "c", STRING, "cid", "Identification of Container"),
    ("conmon-pidfile", "P", STRING, "conmon_pidfile", "PID file for the conmon process"),
    ("container-pidfile", "p", STRING, "container_pidfile",
     "PID file for the initial pid inside of container"),
    ("cuuid", "u", STRING, "cuuid", "Container UUID"),
    ("exec", "e", FLAG, "exec", "Exec a command into a running container"),
    ("exec-attach", "", FLAG, "exec_attach", "Attach to an exec session"),
    ("exec-process-spec", "", STRING, "exec_process_spec", "Path to the process spec for execution"),
    ("exit-command", "", STRING, "exit_command",
     "Path to the program to execute when the container terminates its execution"),
    ("exit-command-arg", "", ARRAY, "exit_command_args",
     "Additional arg to pass to the exit command.  Can be specified multiple times"),
    ("exit-delay", "", INT, "exit_delay", "Delay before invoking the exit command (in seconds)"),
    ("exit-dir", "", STRING, "exit_dir", "Path to the directory where exit files are written"),
    ("leave-stdin-open", "", FLAG, "leave_stdin_open", "Leave stdin open when attached client disconnects"),
    ("log-level", "", STRING, "log_level", "Print debug logs based on log level"),
    ("log-path", "l", ARRAY, "log_paths",
     "Log file path: DRIVER:PATH or PATH; drivers k8s-file, journald, passthrough, none"),
    ("log-size-max", "", INT64, "log_size_max", "Maximum size of log file"),
    ("log-global-size-max", "", INT64, "log_global_size_max", "Maximum size of all log files"),
    ("log-tag", "", STRING, "log_tag", "Additional tag to use for logging"),
    ("log-label", "", ARRAY, "log_labels",
     "Additional label to include in logs. Can be specified multiple times"),
    ("no-container-partial-message", "", FLAG, "no_container_partial_message",
     "Do not set CONTAINER_PARTIAL_MESSAGE=true for partial lines in journald logs (journald driver only)"),
    ("name", "n", STRING, "name", "Container name"),
    ("no-new-keyring", "", FLAG, "no_new_keyring", "Do not create a new session keyring for the container"),
    ("no-pivot", "", FLAG, "no_pivot", "Do not use pivot_root"),
    ("no-sync-log", "", FLAG, "no_sync_log", "Do not manually call sync on logs after container shutdown"),
    ("persist-dir", "0", STRING, "persist_dir",
     "Persistent directory for a container that can be used for storing container data"),
    ("pidfile", "", STRING, "container_pidfile", ""),  # hidden, deprecated alias of -p
    ("replace-listen-pid", "", FLAG, "replace_listen_pid", "Replace listen pid if set for oci-runtime pid"),
    ("restore", "", STRING, "restore", "Restore a container from a checkpoint"),
    ("restore-arg", "", ARRAY, "runtime_opts", ""),  # hidden, shares --runtime-opt's storage
    ("runtime", "r", STRING, "runtime", "Path to store runtime data for the container"),
    ("runtime-arg", "", ARRAY, "runtime_args",
     "Additional arg to pass to the runtime. Can be specified multiple times"),
    ("runtime-opt", "", ARRAY, "runtime_opts",
     "Additional opts to pass to the restore or exec command. Can be specified multiple times"),
    ("sdnotify-socket", "", STRING, "sdnotify_socket",
     "Path to the host's sd-notify socket to relay messages to"),
    ("seccomp-notify-socket", "", STRING, "seccomp_notify_socket",
     "Path to the socket for seccomp notifications (not supported by pymon)"),
    ("seccomp-notify-plugins", "", STRING, "seccomp_notify_plugins",
     "Plugins for seccomp notifications (not supported by pymon)"),
    ("socket-dir-path", "", STRING, "socket_dir_path", "Location of container attach sockets"),
    ("stdin", "i", FLAG, "stdin", "Open up a pipe to pass stdin to the container"),
    ("sync", "", FLAG, "sync", "Keep the main conmon process as its child by only forking once"),
    ("syslog", "", FLAG, "syslog", "Log to syslog (use with cgroupfs cgroup manager)"),
    ("systemd-cgroup", "s", FLAG, "systemd_cgroup",
     "Enable systemd cgroup manager, rather then use the cgroupfs directly"),
    ("terminal", "t", FLAG, "terminal", "Allocate a pseudo-TTY. The default is false"),
    ("timeout", "T", INT, "timeout", "Kill container after specified timeout in seconds."),
    ("version", "", FLAG, "version", "Print the version and exit"),
    ("full-attach", "", FLAG, "full_attach",
     "Don't truncate the path to the attach socket. This option causes conmon to ignore --socket-dir-path"),
    ("log-rotate", "", FLAG, "log_rotate",
     "Enable log rotation instead of truncation when log-size-max is reached"),
    ("log-max-files", "", INT, "log_max_files", "Number of backup log files to keep (default: 1)"),
    ("log-allowlist-dir", "", ARRAY, "log_allowlist_dirs", "Allowed log directory"),
)

_LONG = {o[0]: o for o in OPTIONS}
_SHORT = {o[1]: o for o in OPTIONS if o[1]}

DEFAULTS: dict[str, object] = {
    "api_version": False, "bundle": None, "cid": None, "conmon_pidfile": None,
    "container_pidfile": None, "cuuid": None, "exec": False, "exec_attach": False,
    "exec_process_spec": None, "exit_command": None, "exit_command_args": (), "exit_delay": 0,
    "exit_dir": None, "leave_stdin_open": False, "log_level": None, "log_paths": (),
    "log_size_max": -1, "log_global_size_max": -1, "log_tag": None, "log_labels": (),
    "no_container_partial_message": False, "name": None, "no_new_keyring": False,
    "no_pivot": False, "no_sync_log": False, "persist_dir": None, "replace_listen_pid": False,
    "restore": None, "runtime": None, "runtime_args": (), "runtime_opts": (),
    "sdnotify_socket": None, "seccomp_notify_socket": None, "seccomp_notify_plugins": None,
    "socket_dir_path": "/var/run/crio", "stdin": False, "sync": False, "syslog": False,
    "systemd_cgroup": False, "terminal": False, "timeout": None, "version": False,
    "full_attach": False, "log_rotate": False, "log_max_files": 1, "log_allowlist_dirs": (),
}

LOG_LEVELS = ("error", "fatal", "panic", "warn", "warning", "info", "debug", "trace")


class Frozen:
    """Base for slotted value types: attributes are set once in __init__ and never again."""

    __slots__: tuple[str, ...] = ()

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen")

    def _init(self, values: dict[str, object]) -> None:
        for k, v in values.items():
            object.__setattr__(self, k, v)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__)
        return f"{type(self).__name__}({fields})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and all(
            getattr(self, k) == getattr(other, k) for k in self.__slots__)

    def __hash__(self) -> int:
        return hash(tuple(getattr(self, k) for k in self.__slots__))


class Options(Frozen):
    """The raw option values, exactly as given (no defaults derived from cwd yet)."""

    __slots__ = tuple(DEFAULTS)

    def __init__(self, values: dict[str, object]) -> None:
        self._init(values)

    if False:  # for type checkers: the attributes and their types
        api_version: bool; bundle: str | None; cid: str | None; conmon_pidfile: str | None
        container_pidfile: str | None; cuuid: str | None; exec: bool; exec_attach: bool
        exec_process_spec: str | None; exit_command: str | None
        exit_command_args: tuple[str, ...]; exit_delay: int; exit_dir: str | None
        leave_stdin_open: bool; log_level: str | None; log_paths: tuple[str, ...]
        log_size_max: int; log_global_size_max: int; log_tag: str | None
        log_labels: tuple[str, ...]; no_container_partial_message: bool; name: str | None
        no_new_keyring: bool; no_pivot: bool; no_sync_log: bool; persist_dir: str | None
        replace_listen_pid: bool; restore: str | None; runtime: str | None
        runtime_args: tuple[str, ...]; runtime_opts: tuple[str, ...]
        sdnotify_socket: str | None; seccomp_notify_socket: str | None
        seccomp_notify_plugins: str | None; socket_dir_path: str; stdin: bool; sync: bool
        syslog: bool; systemd_cgroup: bool; terminal: bool; timeout: int | None; version: bool
        full_attach: bool; log_rotate: bool; log_max_files: int
        log_allowlist_dirs: tuple[str, ...]


def _c_strtoll(text: str) -> int | None:
    """strtoll(text, &end, 0) that must consume the whole string, as GLib's parse_int does:
    leading blanks, a sign, then 0x.. hex, 0.. octal or decimal."""
    s = text.lstrip(" \t\n\r\f\v")
    sign = 1
    if s[:1] in ("+", "-"):
        sign = -1 if s[0] == "-" else 1
        s = s[1:]
    if s[:2].lower() == "0x" and len(s) > 2:
        base, digits = 16, s[2:]
    elif s[:1] == "0" and len(s) > 1:
        base, digits = 8, s[1:]
    else:
        base, digits = 10, s
    allowed = "0123456789abcdef"[:base]
    if not digits or any(c not in allowed for c in digits.lower()):
        return None
    return sign * int(digits, base)


def _convert(kind: str, value: str, shown: str) -> object:
    if kind == INT or kind == INT64:
        n = _c_strtoll(value)
        if n is None:
            raise UsageError(f"Cannot parse integer value \u201c{value}\u201d for {shown}")
        bits = 31 if kind == INT else 63
        if not -(1 << bits) <= n < (1 << bits):
            raise UsageError(f"Integer value \u201c{value}\u201d for {shown} out of range")
        return n
    return value


def parse_args(argv: list[str]) -> Options | str:
    """Parse argv (without argv[0]). Returns Options, or the help text for -h/--help.

    Raises UsageError with GLib's message text on a parse error."""
    values: dict[str, object] = dict(DEFAULTS)
    arrays: dict[str, list[str]] = {}

    def store(opt: tuple[str, str, str, str, str], value: str | None, shown: str) -> None:
        _, _, kind, attr, _ = opt
        if kind == FLAG:
            values[attr] = True
        elif kind == ARRAY:
            arrays.setdefault(attr, []).append(value or "")
        else:
            values[attr] = _convert(kind, value or "", shown)

    i, n = 0, len(argv)
    while i < n:
        arg = argv[i]
        i += 1
        if arg == "--":
            break  # everything after is positional, and positionals are ignored
        if arg.startswith("--"):
            name, eq, inline = arg[2:].partition("=")
            if name in ("help", "help-all"):
                return help_text()
            opt = _LONG.get(name)
            if opt is None:
                raise UsageError(f"Unknown option {arg}")
            if opt[2] == FLAG:
                store(opt, None, "--" + name)  # "--api-version=1" is accepted; value ignored
            elif eq:
                store(opt, inline, "--" + name)
            elif i < n:
                store(opt, argv[i], "--" + name)
                i += 1
            else:
                raise UsageError(f"Missing argument for --{name}")
        elif arg.startswith("-") and len(arg) > 1:
            letters = arg[1:]
            for pos, letter in enumerate(letters):
                if letter in ("h", "?"):
                    return help_text()
                opt = _SHORT.get(letter)
                if opt is None:
                    raise UsageError(f"Unknown option -{letter}")
                if opt[2] == FLAG:
                    store(opt, None, "-" + letter)
                    continue
                rest = letters[pos + 1:]
                if rest:
                    store(opt, rest, "-" + letter)
                elif i < n:
                    store(opt, argv[i], "-" + letter)
                    i += 1
                else:
                    raise UsageError(f"Missing argument for -{letter}")
                break
        # else: a positional word (podman's "1" after --api-version): ignored, like conmon
    for attr, items in arrays.items():
        values[attr] = tuple(items)
    return Options(values)


def help_text() -> str:
    lines = ["Usage:", "  pymon [OPTION\u2026] - conmon utility", "",
             "Help Options:", "  -h, --help                          Show help options", "",
             "Application Options:"]
    for long, short, kind, _, text in OPTIONS:
        if not text:
            continue
        left = (f"-{short}, " if short else "") + f"--{long}"
        if kind != FLAG:
            left += "=" + ("N" if kind in (INT, INT64) else "VALUE")
        lines.append(f"  {left:<36}{text}")
    return "\n".join(lines) + "\n\n"


def version_text() -> str:
    return f"conmon version {CONMON_COMPAT_VERSION}\ncommit: pymon {VERSION}\n"

