"""OCI bundles on a busybox-static rootfs, for tests and bench/ (real runc, no network)."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path

RUNC = shutil.which("runc") or "/usr/sbin/runc"
BUSYBOX = shutil.which("busybox") or "/bin/busybox"
APPLETS = ("sh", "echo", "cat", "sleep", "ls", "true", "false", "printf", "yes", "head", "dd",
           "env", "stty", "id", "kill", "seq", "tr", "wc", "tail")


def make_rootfs(root: Path) -> Path:
    (root / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    for applet in APPLETS:
        (root / "bin" / applet).symlink_to("busybox")
    for d in ("proc", "sys", "dev", "tmp", "etc", "root"):
        (root / d).mkdir()
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    return root


def runc_spec(scratch: Path) -> dict:
    """runc's own default spec (`runc spec`), as the base every bundle modifies."""
    scratch.mkdir(parents=True, exist_ok=True)
    subprocess.run([RUNC, "spec", "--bundle", str(scratch)], check=True)
    spec = json.loads((scratch / "config.json").read_text())
    (scratch / "config.json").unlink()
    return spec


def write_bundle(bundle: Path, rootfs: Path, spec: dict, args: list[str], *, tty: bool = False,
                 memory_limit: int | None = None, env: list[str] | None = None) -> Path:
    """A bundle whose config.json runs `args` on the shared read-only rootfs, with /tmp a
    tmpfs."""
    bundle.mkdir(parents=True, exist_ok=True)
    spec = copy.deepcopy(spec)
    spec["root"] = {"path": str(rootfs), "readonly": True}
    spec["process"]["args"] = args
    spec["process"]["terminal"] = tty
    if env is not None:
        spec["process"]["env"] = env
    spec["mounts"].append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                           "options": ["nosuid", "nodev", "mode=1777"]})
    if memory_limit is not None:
        spec["linux"].setdefault("resources", {})["memory"] = {"limit": memory_limit,
                                                              "swap": memory_limit}
    (bundle / "config.json").write_text(json.dumps(spec))
    return bundle
