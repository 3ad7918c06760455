"""OOM detection (§9): cgroup v1 `memory.oom_control` + eventfd, cgroup v2 `memory.events`
watched with inotify. On an OOM kill, empty `oom` files appear in the bundle and the
persist dir; a final non-blocking check runs before the exit files are written.

Unlike conmon, the v2 watcher keeps watching after a change that is not an OOM (conmon
drops its watch then, and only its final check remains), and the v1 final check also
compares memory.oom_control's oom_kill counter, which no missed notification can hide.

Set up on the launch path right after the pid message (before trio is imported: the
container may be started, and killed, during that import), so no trio at module level.
"""

from __future__ import annotations

import errno
import os
import sys

from pymon import _native
from pymon.diag import log
from pymon.procattrs import read_small

CGROUP_ROOT = "/sys/fs/cgroup"


def is_cgroup2(root: str = CGROUP_ROOT) -> bool:
    """A unified hierarchy is mounted at `root` (on a hybrid host it is tmpfs: v1)."""
    return os.path.exists(os.path.join(root, "cgroup.controllers"))


def cgroup_path(pid: int, v2: bool) -> str | None:
    """The container's cgroup path, relative to its hierarchy's mount point."""
    try:
        lines = read_small(f"/proc/{pid}/cgroup").splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if v2 and line.startswith("0::"):
            return path
        if not v2 and "memory" in controllers.split(","):
            return path
    return None


def configured_cgroup(config_json: str) -> str | None:
    """linux.cgroupsPath of an OCI bundle when it is a plain absolute path (the cgroupfs
    manager's form, e.g. podman's /libpod_parent/libpod-ID); None otherwise."""
    import json

    try:
        with open(config_json) as f:
            value = json.load(f).get("linux", {}).get("cgroupsPath")
    except (OSError, ValueError, AttributeError):
        return None
    if isinstance(value, str) and value.startswith("/") and ":" not in value:
        return value
    return None


def parse_memory_events(text: str) -> dict[str, int]:
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            out[key] = int(value)
    return out


def write_oom_files(bundle: str | None, persist_dir: str | None) -> None:
    for d in (persist_dir, bundle):
        if d:
            try:
                os.close(os.open(os.path.join(d, "oom"), os.O_CREAT | os.O_CLOEXEC | os.O_WRONLY,
                                 0o666))
            except OSError as e:
                log.warning("failed to create oom file in %s: %s", d, e.strerror)


class OomWatcher:
    """Watches one container's memory cgroup; `killed` once an OOM kill was seen."""

    def __init__(self, bundle: str | None, persist_dir: str | None) -> None:
        self.bundle, self.persist_dir = bundle, persist_dir
        self.killed = False
        self.fd: int | None = None  # eventfd (v1) or inotify fd (v2)
        self.v2_events: str | None = None
        self.v1_event_control: str | None = None
        self.seen = {"oom": 0, "oom_kill": 0}
        self.v1_oom_control: str | None = None
        self.v1_kills = 0
        self.fresh = True

    @classmethod
    def for_pid(cls, pid: int, bundle: str | None, persist_dir: str | None,
                root: str = CGROUP_ROOT, fresh: bool = True) -> OomWatcher:
        """`fresh`: the cgroup was made for this container (create/restore), so any OOM
        kill it has counted is ours, even one before the watch was armed. An exec session
        shares its container's cgroup: only kills from now on count."""
        w = cls(bundle, persist_dir)
        w.fresh = fresh
        v2 = is_cgroup2(root)
        path = cgroup_path(pid, v2)
        if not v2 and path in (None, "/") and fresh and bundle:
            # Already dead: a zombie's v1 paths read "/". The bundle names the cgroup.
            path = configured_cgroup(os.path.join(bundle, "config.json")) or path
        if path in (None, "/"):
            w.fresh = False  # the root cgroup is nobody's own: count only kills from now on
        if path is None:
            log.warning("no memory cgroup found for pid %d: no OOM monitoring", pid)
            return w
        if v2:
            w.watch_v2(os.path.join(root, path.lstrip("/"), "memory.events"))
        else:
            w.watch_v1(os.path.join(root, "memory", path.lstrip("/")))
        return w

    def watch_v2(self, events_path: str) -> None:
        if not os.path.exists(events_path):
            log.debug("%s does not exist: no OOM monitoring", events_path)
            return
        try:
            fd = _native.inotify_init()
            _native.inotify_add_watch(fd, events_path, _native.IN_MODIFY)
        except OSError as e:
            log.warning("cannot watch %s: %s", events_path, e.strerror)
            return
        self.fd, self.v2_events = fd, events_path
        if not self.fresh:
            try:
                with open(events_path) as f:
                    counts = parse_memory_events(f.read())
                self.seen = {k: counts.get(k, 0) for k in self.seen}
            except OSError:
                pass
        self.check_v2()  # an OOM between the pid message and now

    def watch_v1(self, cgroup_dir: str) -> None:
        control = os.path.join(cgroup_dir, "cgroup.event_control")
        efd = oom_fd = ctl_fd = None
        try:
            ctl_fd = os.open(control, os.O_WRONLY | os.O_CLOEXEC)
            oom_fd = os.open(os.path.join(cgroup_dir, "memory.oom_control"),
                             os.O_RDONLY | os.O_CLOEXEC)
            efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
            os.write(ctl_fd, f"{efd} {oom_fd}".encode())
        except OSError as e:
            log.warning("cannot set up OOM notification in %s: %s", cgroup_dir, e.strerror)
            if efd is not None:
                os.close(efd)
            efd = None
        finally:
            for fd in (ctl_fd, oom_fd):  # the registration holds what it needs
                if fd is not None:
                    os.close(fd)
        if efd is not None:
            self.fd, self.v1_event_control = efd, control
            self.v1_oom_control = os.path.join(cgroup_dir, "memory.oom_control")
            if not self.fresh:
                # only kills from now on count: the baseline was just read (a notification
                # already queued is taken by the next check)
                self.v1_kills = self._v1_kill_count()
                return
            self.check_v1()  # a kill before the watch was armed

    def _v1_kill_count(self) -> int:
        """memory.oom_control's `oom_kill N` (kernels >= 4.13), else 0."""
        if self.v1_oom_control is None:
            return 0
        try:
            return parse_memory_events(read_small(self.v1_oom_control)).get("oom_kill", 0)
        except OSError:
            return 0

    def check(self) -> None:
        """Non-blocking: take any pending notification (also the final check at exit)."""
        if self.fd is None:
            return
        if self.v2_events is not None:
            try:
                os.read(self.fd, 4096)  # consume inotify events; the file says what changed
            except BlockingIOError:
                pass
            self.check_v2()
        else:
            self.check_v1()

    def check_v1(self) -> None:
        assert self.fd is not None
        kills = self._v1_kill_count()
        if kills > self.v1_kills:
            self.v1_kills = kills
            self.oom()
        try:
            count = int.from_bytes(os.read(self.fd, 8), "little")
        except BlockingIOError:
            return
        except OSError as e:
            if e.errno != errno.EAGAIN:
                log.warning("reading the OOM eventfd failed: %s", e.strerror)
            return
        if count == 1 and self.v1_event_control and not os.path.exists(self.v1_event_control):
            log.debug("memory cgroup removed")  # the notification for the cgroup going away
            self.close()
            return
        self.oom()

    def check_v2(self) -> None:
        assert self.v2_events is not None
        try:
            events = parse_memory_events(read_small(self.v2_events))
        except OSError:
            return  # the cgroup is gone
        for key in ("oom", "oom_kill"):
            value = events.get(key, 0)
            if value and value != self.seen[key]:
                self.seen[key] = value
                self.oom()
            # any other change (high, max, ...): keep watching

    def oom(self) -> None:
        if not self.killed:
            log.info("OOM received")
        self.killed = True
        write_oom_files(self.bundle, self.persist_dir)

    async def run(self) -> None:
        import trio

        while self.fd is not None:
            await trio.lowlevel.wait_readable(self.fd)
            self.check()

    def close(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            # Only if trio is loaded: a monitor without trio (pymon.probe) must not pay
            # its import (~100 ms) to close one fd.
            trio = sys.modules.get("trio")
            if trio is not None:
                try:
                    trio.lowlevel.notify_closing(fd)
                except RuntimeError:
                    pass  # outside trio (final check after trio.run)
            os.close(fd)
