"""Which cgroup.procs files a forked monitor writes to join its launcher's cgroups."""

from __future__ import annotations

import pytest

from pymon.server.cgroups import parse_mountinfo, parse_proc_cgroup, procs_files

HYBRID = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
50 23 0:40 / /tmp/with\\040space rw - cgroup cgroup rw,pids
"""


def test_mounts() -> None:
    mounts = parse_mountinfo(HYBRID)
    assert [m.point for m in mounts] == ["/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/memory",
                                         "/sys/fs/cgroup/systemd", "/sys/fs/cgroup/unified",
                                         "/tmp/with space"]
    assert "name=systemd" in mounts[2].controllers
    assert not mounts[3].controllers


def test_files_for_the_hierarchies_that_differ() -> None:
    theirs = parse_proc_cgroup("4:memory:/machine.slice/libpod-conmon-x.scope\n"
                               "2:cpu,cpuacct:/\n1:name=systemd:/machine.slice/x.scope\n"
                               "0::/machine.slice/x.scope\n")
    ours = parse_proc_cgroup("4:memory:/\n2:cpu,cpuacct:/\n1:name=systemd:/system.slice\n"
                             "0::/system.slice\n")
    assert procs_files(theirs, ours, parse_mountinfo(HYBRID)) == [
        "/sys/fs/cgroup/memory/machine.slice/libpod-conmon-x.scope/cgroup.procs",
        "/sys/fs/cgroup/systemd/machine.slice/x.scope/cgroup.procs",
        "/sys/fs/cgroup/unified/machine.slice/x.scope/cgroup.procs"]


def test_mount_of_a_subtree() -> None:
    mounts = parse_mountinfo("60 1 0:50 /sub /mnt/cg rw - cgroup2 cgroup2 rw\n")
    assert procs_files({"": "/sub/a"}, {"": "/"}, mounts) == ["/mnt/cg/a/cgroup.procs"]
    with pytest.raises(OSError, match="no mount"):
        procs_files({"": "/other"}, {"": "/"}, mounts)


def test_unknown_hierarchy_is_an_error() -> None:
    with pytest.raises(OSError, match="no mount for cgroup hierarchy rdma"):
        procs_files({"rdma": "/x"}, {}, parse_mountinfo(HYBRID))
